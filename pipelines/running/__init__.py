"""Running a sweep: plan it (resolve, validate, build the units), execute it on Ray actors, summarise it;
the unit runner, the cluster connection, the input checks and the progress display."""
