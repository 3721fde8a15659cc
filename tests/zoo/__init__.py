"""The model zoo: tiny random-init models of real architectures, each with its metadata, its
Parquet data in one of the cell layouts users have, and the check verdicts it is expected to get."""
