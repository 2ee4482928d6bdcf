"""What the deployment says: the ducklings file, the remembered start dates, the ``[duckling]`` settings, the run options."""
