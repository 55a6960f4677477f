package kappa.bench;

import java.time.Duration;
import java.util.HashMap;
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
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;

/**
 * Kafka Streams peer of the streaming benchmark: counts the records of a topic
 * by key, exactly-once (exactly_once_v2), and reports its throughput.
 *
 * <pre>
 * java -jar streams-count.jar &lt;bootstrap&gt; &lt;topic&gt; &lt;application-id&gt; &lt;expected-records&gt; &lt;state-dir&gt;
 *      [threads=1] [deadline-seconds=600] [streams.property=value ...]
 * </pre>
 *
 * Timed from {@code streams.start()} until the N-th record passes the counting
 * {@code peek}; also reported, the time until the application's committed
 * offsets (transactional, read with requireStable) cover the whole topic. One
 * line on stdout:
 * {@code streams-count records=N seconds=S records_per_second=R committed_seconds=C startup_seconds=U threads=T}.
 * Everything else (Kafka's WARN+ logs, progress) goes to stderr. Exit 0 on success,
 * 1 on a Streams error or bad arguments, 2 when N is not reached by the deadline.
 */
public final class StreamsCount {
  private static final String STORE = "counts"; // changelog: <application-id>-counts-changelog

  public static void main(String[] args) throws Exception {
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

    if (args.length < 5) {
      usage("expected at least 5 arguments, got " + args.length);
    }
    String bootstrap = args[0];
    String topic = args[1];
    String appId = args[2];
    long expected = parseLong(args[3], "expected-records");
    String stateDir = args[4];
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
        threads = (int) parseLong(a, "threads");
        positional++;
      } else if (positional == 1) {
        deadlineSeconds = parseLong(a, "deadline-seconds");
        positional++;
      } else {
        usage("unexpected argument: " + a);
      }
    }
    if (expected <= 0 || threads <= 0 || deadlineSeconds <= 0) {
      usage("expected-records, threads and deadline-seconds must be positive");
    }

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

    AtomicLong seen = new AtomicLong();
    AtomicLong nullKeys = new AtomicLong();
    AtomicLong firstRecordNanos = new AtomicLong();
    AtomicLong reachedNanos = new AtomicLong();
    AtomicLong runningNanos = new AtomicLong();
    CountDownLatch done = new CountDownLatch(1); // N reached, or a fatal error
    AtomicReference<String> failure = new AtomicReference<>();

    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(topic, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
        .peek((key, value) -> {
          if (key == null) {
            nullKeys.incrementAndGet();
          }
          long n = seen.incrementAndGet();
          if (n == 1) {
            firstRecordNanos.compareAndSet(0, System.nanoTime());
          }
          if (n == expected) {
            reachedNanos.set(System.nanoTime());
            done.countDown();
          }
        })
        // Null keys: counted in the progress measure (above) but filtered out of
        // the count-by-key. Aggregations drop null-key records anyway (with a
        // WARN per record); re-keying them under a fixed key would add a
        // repartition topic and change what is measured.
        .filter((key, value) -> key != null)
        .groupByKey(Grouped.with(Serdes.ByteArray(), Serdes.ByteArray()))
        .count(Materialized.<byte[], Long, KeyValueStore<Bytes, byte[]>>as(STORE)
            .withKeySerde(Serdes.ByteArray())
            .withValueSerde(Serdes.Long()));

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    streams.setUncaughtExceptionHandler(e -> {
      failure.compareAndSet(null, "stream thread failed: " + e);
      done.countDown();
      return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });
    streams.setStateListener((newState, oldState) -> {
      if (newState == KafkaStreams.State.RUNNING) {
        runningNanos.compareAndSet(0, System.nanoTime());
      } else if (newState == KafkaStreams.State.ERROR
          || newState == KafkaStreams.State.PENDING_ERROR
          || newState == KafkaStreams.State.PENDING_SHUTDOWN && reachedNanos.get() == 0) {
        failure.compareAndSet(null, "Kafka Streams went from " + oldState + " to " + newState);
        done.countDown();
      }
    });
    Runtime.getRuntime().addShutdownHook(new Thread(() -> streams.close(Duration.ofSeconds(10))));

    System.err.printf("streams-count: %s on %s, application.id=%s, %d thread(s), waiting for %d records (deadline %d s)%n",
        topic, bootstrap, appId, threads, expected, deadlineSeconds);
    long t0 = System.nanoTime();
    streams.start();
    boolean finished = done.await(deadlineSeconds, TimeUnit.SECONDS);

    if (!finished || failure.get() != null) {
      String why = failure.get() != null ? failure.get()
          : "only " + seen.get() + " of " + expected + " records after " + deadlineSeconds + " s";
      int status = failure.get() != null ? 1 : 2; // before close(), which moves the state on
      System.err.println("streams-count: ERROR: " + why);
      closeQuietly(streams);
      System.exit(status);
    }

    long tN = reachedNanos.get();
    double seconds = (tN - t0) / 1e9;
    double committedSeconds = -1;
    try {
      long deadline = t0 + TimeUnit.SECONDS.toNanos(deadlineSeconds);
      long tCommitted = waitCommitted(bootstrap, topic, appId, deadline);
      committedSeconds = tCommitted > 0 ? (tCommitted - t0) / 1e9 : -1;
    } catch (Exception e) {
      System.err.println("streams-count: could not check the committed offsets: " + e);
    }
    if (committedSeconds < 0) {
      System.err.println("streams-count: the committed offsets did not cover the topic by the deadline");
    }
    // A check that the store really did the counting: its counts add up to the
    // keyed records seen (read through the record cache, after the timing).
    try {
      ReadOnlyKeyValueStore<byte[], Long> store =
          streams.store(StoreQueryParameters.fromNameAndType(STORE, QueryableStoreTypes.keyValueStore()));
      long keys = 0;
      long total = 0;
      try (KeyValueIterator<byte[], Long> it = store.all()) {
        while (it.hasNext()) {
          total += it.next().value;
          keys++;
        }
      }
      System.err.printf("streams-count: store %s: %d keys, counts add up to %d (%s)%n", STORE, keys, total,
          total == seen.get() - nullKeys.get() ? "= keyed records seen" : "MISMATCH: keyed records seen "
              + (seen.get() - nullKeys.get()));
    } catch (RuntimeException e) {
      System.err.println("streams-count: could not read the store: " + e);
    }
    if (seen.get() > expected) {
      System.err.printf("streams-count: note: %d records seen, more than the %d expected%n", seen.get(), expected);
    }
    if (nullKeys.get() > 0) {
      System.err.printf("streams-count: %d records had a null key (seen, not counted by key)%n", nullKeys.get());
    }
    long running = runningNanos.get();
    long first = firstRecordNanos.get();
    System.err.printf(Locale.ROOT, "streams-count: RUNNING after %.3f s, first record after %.3f s%n",
        running > 0 ? (running - t0) / 1e9 : -1.0, first > 0 ? (first - t0) / 1e9 : -1.0);

    System.out.printf(Locale.ROOT,
        "streams-count records=%d seconds=%.3f records_per_second=%.0f committed_seconds=%.3f startup_seconds=%.3f threads=%d%n",
        expected, seconds, expected / seconds, committedSeconds,
        first > 0 ? (first - t0) / 1e9 : -1.0, threads);
    System.out.flush();

    if (!streams.close(Duration.ofSeconds(30))) {
      System.err.println("streams-count: warning: Kafka Streams did not close within 30 s");
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
      TopicDescription d = admin.describeTopics(java.util.List.of(topic)).allTopicNames().get().get(topic);
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

  private static void closeQuietly(KafkaStreams streams) {
    try {
      streams.close(Duration.ofSeconds(30));
    } catch (RuntimeException e) {
      System.err.println("streams-count: close failed: " + e);
    }
  }

  private static void setDefault(String key, String value) {
    if (System.getProperty(key) == null) {
      System.setProperty(key, value);
    }
  }

  private static long parseLong(String s, String what) {
    try {
      return Long.parseLong(s);
    } catch (NumberFormatException e) {
      usage(what + " is not a number: " + s);
      return 0; // unreachable
    }
  }

  private static void usage(String why) {
    System.err.println("streams-count: " + why);
    System.err.println("usage: streams-count <bootstrap> <topic> <application-id> <expected-records> <state-dir>"
        + " [threads=1] [deadline-seconds=600] [streams.property=value ...]");
    System.exit(1);
  }
}
