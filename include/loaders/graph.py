"""Neo4j access for the loaders, through Airflow's Neo4jHook and the ``neo4j_default`` connection."""

from __future__ import annotations

import logging

from neo4j import Driver
from neo4j.exceptions import AuthError, ServiceUnavailable

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "neo4j_default"


class Neo4jConnectionError(RuntimeError):
    """Neo4j could not be reached or refused the credentials of an Airflow connection."""


def connect(conn_id: str = DEFAULT_CONN_ID) -> Driver:
    """Return a verified ``neo4j.Driver`` for the Airflow connection ``conn_id``.

    Fails with :class:`Neo4jConnectionError` naming the connection when the server is unreachable
    or the credentials are wrong, instead of the driver's bare error at the first query.
    """
    from airflow.providers.neo4j.hooks.neo4j import Neo4jHook

    hook = Neo4jHook(conn_id=conn_id)
    conn = hook.get_connection(conn_id)
    where = f"{conn.host}:{conn.port or 7687}"
    driver = hook.get_conn()
    try:
        driver.verify_connectivity()
    except AuthError as e:
        driver.close()
        raise Neo4jConnectionError(
            f"Neo4j authentication failed for Airflow connection '{conn_id}' "
            f"({where}, user '{conn.login}'): check the connection's login and password. "
            f"Server said: {e.message}"
        ) from e
    except (ServiceUnavailable, OSError) as e:
        driver.close()
        raise Neo4jConnectionError(
            f"Cannot reach Neo4j for Airflow connection '{conn_id}' at {where}: {e}. "
            "Is the server running (make neo4j-start)?"
        ) from e
    return driver
