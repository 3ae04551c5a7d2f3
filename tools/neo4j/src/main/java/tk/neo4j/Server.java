package tk.neo4j;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;

/**
 * Runs a Neo4j 5 community DBMS in this JVM with the Bolt connector on a loopback port and
 * authentication on. Settings come from environment variables (scripts/neo4j.sh sets them):
 *
 * <ul>
 *   <li>NEO4J_HOME_DIR   data folder (created if missing)</li>
 *   <li>NEO4J_BOLT_HOST  listen address, default 127.0.0.1</li>
 *   <li>NEO4J_BOLT_PORT  Bolt port, default 7687</li>
 *   <li>NEO4J_PASSWORD   password of the user "neo4j" (required, at least 8 characters)</li>
 *   <li>NEO4J_PAGECACHE_MB page cache size, default 256</li>
 * </ul>
 *
 * Prints "READY bolt://host:port" once Bolt accepts connections, and shuts the DBMS down
 * cleanly on SIGTERM/SIGINT.
 */
public final class Server {
    private Server() {}

    public static void main(String[] args) throws Exception {
        String home = env("NEO4J_HOME_DIR", ".neo4j");
        String host = env("NEO4J_BOLT_HOST", "127.0.0.1");
        int port = Integer.parseInt(env("NEO4J_BOLT_PORT", "7687"));
        long pageCacheMb = Long.parseLong(env("NEO4J_PAGECACHE_MB", "256"));
        String password = System.getenv("NEO4J_PASSWORD");
        if (password == null || password.length() < 8) {
            System.err.println("NEO4J_PASSWORD must be set to at least 8 characters");
            System.exit(2);
        }
        Path homeDir = Path.of(home).toAbsolutePath();
        Files.createDirectories(homeDir);

        long started = System.nanoTime();
        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(homeDir)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress(host, port))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(pageCacheMb))
                .build();

        setPassword(dbms, password);

        CountDownLatch stop = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("Stopping Neo4j");
            dbms.shutdown();
            stop.countDown();
        }, "neo4j-shutdown"));

        long ms = (System.nanoTime() - started) / 1_000_000;
        System.out.printf("READY bolt://%s:%d (Neo4j %s, started in %d ms)%n",
                host, port, org.neo4j.kernel.internal.Version.getNeo4jVersion(), ms);
        System.out.flush();
        stop.await();
    }

    /** Sets the password of "neo4j" from configuration, so a changed setting takes effect. */
    private static void setPassword(DatabaseManagementService dbms, String password) {
        try {
            dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME).executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED", Map.of("pw", password));
        } catch (RuntimeException e) {
            // Setting the password it already has is refused; that is the normal restart case.
            String msg = String.valueOf(e.getMessage());
            if (!msg.contains("cannot be the same")) {
                throw e;
            }
        }
    }

    private static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }
}
