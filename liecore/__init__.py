"""liecore: Lie derivatives and the Local Equivariance Error of image models (pure torch)."""
