pytest_plugins = [
    "pg_cluster",
    "db_fixtures",
    "smtp_server",
    "feed_server",
    "browser",
    "cli_fixtures",
]
