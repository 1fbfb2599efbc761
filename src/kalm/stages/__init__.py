"""One module per DVC stage: ``run(params) -> metrics``; the only place that decides what is read and written."""
