package kappa.bench;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsOptions;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;

/**
 * What the Kafka Streams peers of the streaming benchmark share: their
 * arguments, their configuration (exactly_once_v2, from the earliest offset),
 * the timing, the committed-offsets check, the one-line report and the exit
 * codes. A peer supplies its topology, which calls {@link Progress#record()}
 * once per input record, and an optional check of its state.
 *
 * <pre>
 * java -jar &lt;peer&gt;.jar &lt;bootstrap&gt; &lt;topic&gt; &lt;application-id&gt; &lt;expected-records&gt; &lt;state-dir&gt;
 *      [threads=1] [deadline-seconds=600] [streams.property=value ...]
 * </pre>
 *
 * Timed from {@code streams.start()} until the N-th record is recorded; also
 * reported, the time until the application's committed offsets (transactional,
 * read with requireStable) cover the whole topic. One line on stdout:
 * {@code <peer> records=N seconds=S records_per_second=R committed_seconds=C startup_seconds=U threads=T}.
 * Everything else (Kafka's WARN+ logs, progress) goes to stderr. Exit 0 on success,
 * 1 on a Streams error or bad arguments, 2 when N is not reached by the deadline.
 */
public final class StreamsPeer {
  private StreamsPeer() {}

  /** One peer: its topology and, after the timing, a look at its state. */
  public interface App {
    /** The topology; it calls {@code progress.record()} once per input record. */
    Topology topology(Settings settings, Progress progress);

    /** Checks the state after the timing (on stderr); the app is still running. */
    default void check(KafkaStreams streams, Settings settings, Progress progress) {}
  }

  /** The command line. */
  public static final class Settings {
    public final String name;
    public final String bootstrap;
    public final String topic;
    public final String appId;
    public final long expected;
    public final String stateDir;
    public final int threads;
    public final long deadlineSeconds;
    /** Extra Streams configs given as key=value. */
    public final Map<String, String> overrides;

    private Settings(String name, String[] args) {
      this.name = name;
      if (args.length < 5) {
        usage(name, "expected at least 5 arguments, got " + args.length);
      }
      bootstrap = args[0];
      topic = args[1];
      appId = args[2];
      expected = parseLong(name, args[3], "expected-records");
      stateDir = args[4];
      int threads = 1;
      long deadlineSeconds = 600;
      Map<String, String> overrides = new HashMap<>();
      int positional = 0;
      for (int i = 5; i < args.length; i++) {
        String a = args[i];
        int eq = a.indexOf('=');
        if (eq > 0) {
          overrides.put(a.substring(0, eq), a.substring(eq + 1));
        } else if (positional == 0) {
          threads = (int) parseLong(name, a, "threads");
          positional++;
        } else if (positional == 1) {
          deadlineSeconds = parseLong(name, a, "deadline-seconds");
          positional++;
        } else {
          usage(name, "unexpected argument: " + a);
        }
      }
      if (expected <= 0 || threads <= 0 || deadlineSeconds <= 0) {
        usage(name, "expected-records, threads and deadline-seconds must be positive");
      }
      this.threads = threads;
      this.deadlineSeconds = deadlineSeconds;
      this.overrides = overrides;
    }

    /** The configuration every peer runs with (Kafka's defaults otherwise). */
    Properties streamsProperties() {
      Properties props = new Properties();
      props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
      props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
      props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
      props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
      props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1); // single broker
      props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
      props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
      props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
      props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
      // Streams keeps its members in the group on close (it expects a restart);
      // this app does not come back, so leave at once: the group is then empty
      // and the caller can delete it (KafkaStreams.CloseOptions.leaveGroup only
      // acts on static members in Kafka 4.1).
      props.put(StreamsConfig.mainConsumerPrefix("internal.leave.group.on.close"), true);
      // Everything else (commit.interval.ms = 100 under exactly-once, the 10 MiB
      // record cache, ...) stays at Kafka's defaults unless given as key=value.
      props.putAll(overrides);
      return props;
    }
  }

  /** Records through the app, and when the first and the N-th went through. */
  public static final class Progress {
    private final long expected;
    private final AtomicLong seen = new AtomicLong();
    private final AtomicLong firstRecordNanos = new AtomicLong();
    private final AtomicLong reachedNanos = new AtomicLong();
    private final CountDownLatch done = new CountDownLatch(1); // N reached, or a fatal error
    private final AtomicReference<String> failure = new AtomicReference<>();

    private Progress(long expected) {
      this.expected = expected;
    }

    /** One more input record through the app (any stream thread). */
    public void record() {
      long n = seen.incrementAndGet();
      if (n == 1) {
        firstRecordNanos.compareAndSet(0, System.nanoTime());
      }
      if (n == expected) {
        reachedNanos.set(System.nanoTime());
        done.countDown();
      }
    }

    /** Input records through the app so far. */
    public long seen() {
      return seen.get();
    }

    private void fail(String why) {
      failure.compareAndSet(null, why);
      done.countDown();
    }
  }

  /** Runs {@code app} as the peer {@code name} with the command line {@code args}; exits. */
  public static void main(String name, String[] args, App app) throws Exception {
    // slf4j-simple reads these when the first logger is made: keep Kafka quiet
    // (WARN and up) and off stdout, unless the caller set them with -D.
    setDefault("org.slf4j.simpleLogger.defaultLogLevel", "warn");
    setDefault("org.slf4j.simpleLogger.logFile", "System.err");
    setDefault("org.slf4j.simpleLogger.showDateTime", "true");
    setDefault("org.slf4j.simpleLogger.dateTimeFormat", "HH:mm:ss.SSS");
    setDefault("org.slf4j.simpleLogger.showShortLogName", "true");
    // While the last transaction is pending, the committed-offsets check below
    // gets UNSTABLE_OFFSET_COMMIT (expected: it retries) and the admin client
    // WARNs about it.
    setDefault("org.slf4j.simpleLogger.log.org.apache.kafka.clients.admin.internals.ListConsumerGroupOffsetsHandler",
        "error");

    Settings s = new Settings(name, args);
    Progress progress = new Progress(s.expected);
    AtomicLong runningNanos = new AtomicLong();

    KafkaStreams streams = new KafkaStreams(app.topology(s, progress), s.streamsProperties());
    streams.setUncaughtExceptionHandler(e -> {
      progress.fail("stream thread failed: " + e);
      return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });
    streams.setStateListener((newState, oldState) -> {
      if (newState == KafkaStreams.State.RUNNING) {
        runningNanos.compareAndSet(0, System.nanoTime());
      } else if (newState == KafkaStreams.State.ERROR
          || newState == KafkaStreams.State.PENDING_ERROR
          || newState == KafkaStreams.State.PENDING_SHUTDOWN && progress.reachedNanos.get() == 0) {
        progress.fail("Kafka Streams went from " + oldState + " to " + newState);
      }
    });
    Runtime.getRuntime().addShutdownHook(new Thread(() -> streams.close(Duration.ofSeconds(10))));

    System.err.printf("%s: %s on %s, application.id=%s, %d thread(s), waiting for %d records (deadline %d s)%n",
        name, s.topic, s.bootstrap, s.appId, s.threads, s.expected, s.deadlineSeconds);
    long t0 = System.nanoTime();
    streams.start();
    boolean finished = progress.done.await(s.deadlineSeconds, TimeUnit.SECONDS);

    String failure = progress.failure.get();
    if (!finished || failure != null) {
      String why = failure != null ? failure
          : "only " + progress.seen() + " of " + s.expected + " records after " + s.deadlineSeconds + " s";
      int status = failure != null ? 1 : 2; // before close(), which moves the state on
      System.err.println(name + ": ERROR: " + why);
      closeQuietly(name, streams);
      System.exit(status);
    }

    long tN = progress.reachedNanos.get();
    double seconds = (tN - t0) / 1e9;
    double committedSeconds = -1;
    try {
      long deadline = t0 + TimeUnit.SECONDS.toNanos(s.deadlineSeconds);
      long tCommitted = waitCommitted(s.bootstrap, s.topic, s.appId, deadline);
      committedSeconds = tCommitted > 0 ? (tCommitted - t0) / 1e9 : -1;
    } catch (Exception e) {
      System.err.println(name + ": could not check the committed offsets: " + e);
    }
    if (committedSeconds < 0) {
      System.err.println(name + ": the committed offsets did not cover the topic by the deadline");
    }
    // A check that the state really holds the work (after the timing).
    try {
      app.check(streams, s, progress);
    } catch (RuntimeException e) {
      System.err.println(name + ": could not check the state: " + e);
    }
    if (progress.seen() > s.expected) {
      System.err.printf("%s: note: %d records seen, more than the %d expected%n", name, progress.seen(), s.expected);
    }
    long running = runningNanos.get();
    long first = progress.firstRecordNanos.get();
    System.err.printf(Locale.ROOT, "%s: RUNNING after %.3f s, first record after %.3f s%n", name,
        running > 0 ? (running - t0) / 1e9 : -1.0, first > 0 ? (first - t0) / 1e9 : -1.0);

    System.out.printf(Locale.ROOT,
        "%s records=%d seconds=%.3f records_per_second=%.0f committed_seconds=%.3f startup_seconds=%.3f threads=%d%n",
        name, s.expected, seconds, s.expected / seconds, committedSeconds,
        first > 0 ? (first - t0) / 1e9 : -1.0, s.threads);
    System.out.flush();

    if (!streams.close(Duration.ofSeconds(30))) {
      System.err.println(name + ": warning: Kafka Streams did not close within 30 s");
    }
    System.exit(0);
  }

  /**
   * Polls the application's committed offsets (requireStable: pending
   * transactional commits are waited for) until they reach the topic's end
   * offsets as of now; returns System.nanoTime() then, or 0 past the deadline.
   */
  private static long waitCommitted(String bootstrap, String topic, String groupId, long deadlineNanos)
      throws Exception {
    Properties p = new Properties();
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    try (Admin admin = Admin.create(p)) {
      TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
      Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
      for (TopicPartitionInfo info : d.partitions()) {
        latest.put(new TopicPartition(topic, info.partition()), OffsetSpec.latest());
      }
      Map<TopicPartition, ListOffsetsResultInfo> ends = admin.listOffsets(latest).all().get();
      ListConsumerGroupOffsetsOptions stable = new ListConsumerGroupOffsetsOptions().requireStable(true);
      while (System.nanoTime() < deadlineNanos) {
        Map<TopicPartition, OffsetAndMetadata> committed =
            admin.listConsumerGroupOffsets(groupId, stable).partitionsToOffsetAndMetadata().get();
        long now = System.nanoTime();
        boolean all = true;
        for (Map.Entry<TopicPartition, ListOffsetsResultInfo> e : ends.entrySet()) {
          OffsetAndMetadata c = committed.get(e.getKey());
          if ((c == null ? 0 : c.offset()) < e.getValue().offset()) {
            all = false;
            break;
          }
        }
        if (all) {
          return now;
        }
        Thread.sleep(10);
      }
      return 0;
    }
  }

  private static void closeQuietly(String name, KafkaStreams streams) {
    try {
      streams.close(Duration.ofSeconds(30));
    } catch (RuntimeException e) {
      System.err.println(name + ": close failed: " + e);
    }
  }

  private static void setDefault(String key, String value) {
    if (System.getProperty(key) == null) {
      System.setProperty(key, value);
    }
  }

  private static long parseLong(String name, String s, String what) {
    try {
      return Long.parseLong(s);
    } catch (NumberFormatException e) {
      usage(name, what + " is not a number: " + s);
      return 0; // unreachable
    }
  }

  private static void usage(String name, String why) {
    System.err.println(name + ": " + why);
    System.err.println("usage: " + name + " <bootstrap> <topic> <application-id> <expected-records> <state-dir>"
        + " [threads=1] [deadline-seconds=600] [streams.property=value ...]");
    System.exit(1);
  }
}
