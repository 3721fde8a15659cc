"""One module per DVC stage, each the one place for that stage's IO: read the inputs the config
names, call a step, write the outputs dvc.yaml declares. `stages/<name>.py` runs `run_<name>`."""
