package kappa.bench;

import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
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
 * The arguments, timing and report are {@link StreamsPeer}'s, shared with the
 * other peers.
 */
public final class StreamsCount implements StreamsPeer.App {
  private static final String STORE = "counts"; // changelog: <application-id>-counts-changelog

  private final AtomicLong nullKeys = new AtomicLong();

  public static void main(String[] args) throws Exception {
    StreamsPeer.main("streams-count", args, new StreamsCount());
  }

  @Override
  public Topology topology(StreamsPeer.Settings settings, StreamsPeer.Progress progress) {
    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(settings.topic, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
        .peek((key, value) -> {
          if (key == null) {
            nullKeys.incrementAndGet();
          }
          progress.record();
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
    return builder.build();
  }

  /** The store really did the counting: its counts add up to the keyed records seen. */
  @Override
  public void check(KafkaStreams streams, StreamsPeer.Settings settings, StreamsPeer.Progress progress) {
    // Read through the record cache, after the timing.
    long keyed = progress.seen() - nullKeys.get();
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
        total == keyed ? "= keyed records seen" : "MISMATCH: keyed records seen " + keyed);
    if (nullKeys.get() > 0) {
      System.err.printf("streams-count: %d records had a null key (seen, not counted by key)%n", nullKeys.get());
    }
  }
}
