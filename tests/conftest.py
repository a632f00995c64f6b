pytest_plugins = ["pg_cluster", "db_fixtures"]
