-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d), as the
-- superuser of POSTGRES_USER, connected to POSTGRES_DB (Airflow's metadata database):
--   psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc --dbname "$POSTGRES_DB" -f <this>
-- The ducklings' catalog user (the ducklake_default connection's login) and one catalog database per sample
-- duckling of docker/ducklings.yaml, owned by that user so DuckLake can create its metadata tables.
\getenv catalog_user DUCKLING_CATALOG_USER
\getenv catalog_password DUCKLING_CATALOG_PASSWORD

CREATE ROLE :"catalog_user" LOGIN PASSWORD :'catalog_password';

CREATE DATABASE duckling_team_1 OWNER :"catalog_user";
CREATE DATABASE duckling_team_2 OWNER :"catalog_user";
CREATE DATABASE duckling_team_3 OWNER :"catalog_user";
