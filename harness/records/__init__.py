"""Run records: what a run did, on which data, with which code, so it can be compared and reproduced."""
