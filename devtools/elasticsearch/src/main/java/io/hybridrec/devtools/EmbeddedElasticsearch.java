package io.hybridrec.devtools;

import org.elasticsearch.Build;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.ClasspathPluginNode;
import org.elasticsearch.node.Node;
import org.elasticsearch.transport.netty4.Netty4Plugin;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Runs one real Elasticsearch node in this JVM, bound to loopback, with
 * transport-netty4 loaded from the classpath so that it speaks HTTP. Alone it is a
 * single-node cluster; given --seed-hosts it joins (or, with --initial-master-nodes,
 * bootstraps) a multi-node cluster of such nodes.
 *
 * Usage: EmbeddedElasticsearch --home DIR [--port 9200] [--transport-port 9300]
 *        [--cluster-name hybridrec-dev] [--node-name hybridrec-embedded]
 *        [--seed-hosts 127.0.0.1:9351,127.0.0.1:9352 --initial-master-nodes n1,n2,n3]
 *        [-Ekey=value ...]
 * Heap is the JVM's (-Xmx). Logs go to DIR/logs/CLUSTER.log. SIGTERM closes the node cleanly.
 */
public final class EmbeddedElasticsearch {

    private EmbeddedElasticsearch() {}

    public static void main(String[] args) throws Exception {
        Settings settings = parseArguments(args);
        Path home = Path.of(settings.get("path.home"));
        Files.createDirectories(home.resolve("config"));
        Files.createDirectories(Path.of(settings.get("path.logs")));
        Files.createDirectories(Path.of(settings.get("path.data")));
        installLoggingConfig(home.resolve("config"));

        Environment environment = new Environment(settings, home.resolve("config"));
        LogConfigurator.configureESLogging();
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(settings.get("node.name"));
        LogConfigurator.configure(environment, true);

        Node node = new ClasspathPluginNode(environment, List.of(Netty4Plugin.class, RootInfoPlugin.class));
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
            } catch (IOException | InterruptedException e) {
                System.err.println("embedded elasticsearch: error while closing: " + e);
            } finally {
                stopped.countDown();
            }
        }, "embedded-es-shutdown"));

        node.start();
        System.out.println(
            "embedded elasticsearch " + Build.current().version() + " started on http://" + settings.get("network.host") + ":"
                + settings.get("http.port") + " (home " + home + ")"
        );
        stopped.await();
    }

    static Settings parseArguments(String[] args) {
        String home = null;
        String port = "9200";
        String transportPort = "9300";
        String clusterName = "hybridrec-dev";
        String nodeName = "hybridrec-embedded";
        String seedHosts = null;
        String initialMasters = null;
        Settings.Builder extra = Settings.builder();
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            switch (arg) {
                case "--home" -> home = requireValue(args, ++i, arg);
                case "--port" -> port = requireValue(args, ++i, arg);
                case "--transport-port" -> transportPort = requireValue(args, ++i, arg);
                case "--cluster-name" -> clusterName = requireValue(args, ++i, arg);
                case "--node-name" -> nodeName = requireValue(args, ++i, arg);
                case "--seed-hosts" -> seedHosts = requireValue(args, ++i, arg);
                case "--initial-master-nodes" -> initialMasters = requireValue(args, ++i, arg);
                default -> {
                    if (arg.startsWith("-E") && arg.contains("=")) {
                        String kv = arg.substring(2);
                        int eq = kv.indexOf('=');
                        extra.put(kv.substring(0, eq), kv.substring(eq + 1));
                    } else {
                        throw new IllegalArgumentException("unknown argument: " + arg);
                    }
                }
            }
        }
        if (home == null) {
            throw new IllegalArgumentException("--home DIR is required");
        }
        if (initialMasters != null && seedHosts == null) {
            throw new IllegalArgumentException("--initial-master-nodes needs --seed-hosts");
        }
        Path homePath = Path.of(home).toAbsolutePath();
        Settings.Builder discovery = Settings.builder();
        if (seedHosts == null) {
            discovery.put("discovery.type", "single-node");
        } else {
            discovery.putList("discovery.seed_hosts", List.of(seedHosts.split(",")));
            if (initialMasters != null) {
                // Read only while the cluster has never elected a master; later restarts ignore it.
                discovery.putList("cluster.initial_master_nodes", List.of(initialMasters.split(",")));
            }
        }
        return Settings.builder()
            .put("cluster.name", clusterName)
            .put("node.name", nodeName)
            .put("path.home", homePath.toString())
            .put("path.data", homePath.resolve("data").toString())
            .put("path.logs", homePath.resolve("logs").toString())
            .put("network.host", "127.0.0.1")
            .put("http.port", port)
            .put("transport.port", transportPort)
            .put(discovery.build())
            // A development node on a shared disk: never turn indices read-only because the disk is fuller than 90%.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put(extra.build())
            .build();
    }

    private static String requireValue(String[] args, int index, String flag) {
        if (index >= args.length) {
            throw new IllegalArgumentException(flag + " needs a value");
        }
        return args[index];
    }

    private static void installLoggingConfig(Path configDir) throws IOException {
        try (InputStream in = EmbeddedElasticsearch.class.getResourceAsStream("/log4j2.properties")) {
            if (in == null) {
                throw new IllegalStateException("log4j2.properties missing from the jar");
            }
            Files.copy(in, configDir.resolve("log4j2.properties"), StandardCopyOption.REPLACE_EXISTING);
        }
    }
}
