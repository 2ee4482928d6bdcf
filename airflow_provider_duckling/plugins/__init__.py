"""The provider's Airflow plugin (entry point ``airflow.plugins``) and the api-server middleware it registers."""
