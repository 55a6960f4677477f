package kappa.bench;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.LongAdder;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.ProcessorSupplier;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * Kafka Streams peer of the streaming benchmark that does the recommendation
 * service's own model work (services/recommendation/src/model.rs and
 * recommender.rs), exactly-once (exactly_once_v2), and reports its throughput
 * like {@link StreamsCount} (arguments, timing, report and exit codes are
 * {@link StreamsPeer}'s):
 * {@code streams-cooc records=N seconds=S records_per_second=R committed_seconds=C startup_seconds=U threads=T}.
 *
 * <p>One Processor API processor per partition (task) reads each record of
 * the topic (keyed by user), parses its JSON value, skips what is not an
 * interaction and folds interactions into four persistent (RocksDB) key-value
 * stores with changelogs and the record cache, the service's four tables:
 * <ul>
 *   <li>{@code rec-users}: user id -> the last 10 distinct products with the
 *       log-score of their strongest action, and the last 50 purchases;
 *   <li>{@code rec-cooc}: product id -> its co-occurrence log-scores with other
 *       products, pruned to the best 20 when they reach 40;
 *   <li>{@code rec-popularity}: product id -> its log-score;
 *   <li>{@code rec-daily}: UTC day -> views, clicks, add_to_cart, purchases,
 *       revenue_cents.
 * </ul>
 * Scores are base-2 logarithms of forward-decayed weights (landmark
 * 2026-01-01, 7-day half-life), added with log-sum-exp, as in model.rs.
 * Values are stored in a small binary form (big-endian; ids as UTF-8 with a
 * 16-bit length; scores as IEEE doubles).
 */
public final class StreamsCooc implements StreamsPeer.App {
  static final String USERS = "rec-users";
  static final String COOC = "rec-cooc";
  static final String POPULARITY = "rec-popularity";
  static final String DAILY = "rec-daily";

  /** Distinct recent products remembered per user (model.rs RECENT). */
  static final int RECENT = 10;
  /** Purchases remembered per user (model.rs PURCHASED). */
  static final int PURCHASED = 50;
  /** Neighbours kept per product after pruning (model.rs NEIGHBORS). */
  static final int NEIGHBORS = 20;
  /** Landmark of forward decay: 2026-01-01T00:00:00Z (model.rs LANDMARK_SECS). */
  static final long LANDMARK_SECS = 1_767_225_600L;
  /** The service's default half-life ([recommendation] half_life_days = 7.0), in seconds. */
  static final double HALF_LIFE_SECS = 7.0 * 86_400.0;
  /** Rust's std::f64::consts::LOG2_E. */
  static final double LOG2_E = 1.4426950408889634;

  /** The event parser's limits (shared::event::limits defaults). */
  static final int MAX_ID_BYTES = 256;
  static final long MAX_AMOUNT_CENTS = 1_000_000_000_000L;
  static final long MAX_FUTURE_SECS = 3600;

  // Actions, and log2 of their weights (purchase 8 > add_to_cart 4 > click 2 > view 1):
  // exact, as Rust's f64::log2 of a power of two.
  static final int VIEW = 0;
  static final int CLICK = 1;
  static final int ADD_TO_CART = 2;
  static final int PURCHASE = 3;
  static final double[] LOG2_WEIGHT = {0.0, 1.0, 2.0, 3.0};

  private static final JsonFactory JSON = new JsonFactory();
  // What a record is (Model.parse).
  private static final int INTERACTION = 0;
  private static final int OTHER = 1;
  private static final int MALFORMED = 2;

  // Over all tasks and threads; read by check() after the timing.
  private final LongAdder applied = new LongAdder();
  private final LongAdder otherTypes = new LongAdder();
  private final LongAdder rejected = new LongAdder();

  public static void main(String[] args) throws Exception {
    StreamsPeer.main("streams-cooc", args, new StreamsCooc());
  }

  @Override
  public Topology topology(StreamsPeer.Settings settings, StreamsPeer.Progress progress) {
    Topology topology = new Topology();
    topology.addSource("events", new ByteArrayDeserializer(), new ByteArrayDeserializer(), settings.topic);
    ProcessorSupplier<byte[], byte[], Void, Void> model = () -> new Model(progress);
    topology.addProcessor("model", model, "events");
    for (String store : List.of(USERS, COOC, POPULARITY, DAILY)) {
      // Persistent (RocksDB), logged to <application-id>-<store>-changelog (the
      // default), and cached like the DSL's stores (the count peer's): the
      // changelog and RocksDB get one write per key per commit, not per update.
      topology.addStateStore(
          Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(store), Serdes.Bytes(), Serdes.ByteArray())
              .withCachingEnabled(),
          "model");
    }
    return topology;
  }

  /** The stores hold the work: the daily counters add up to the interactions applied. */
  @Override
  public void check(KafkaStreams streams, StreamsPeer.Settings settings, StreamsPeer.Progress progress) {
    long users = 0;
    long products = 0;
    long pairs = 0;
    int longest = 0;
    long popular = 0;
    long days = 0;
    long[] totals = new long[5];
    try (KeyValueIterator<Bytes, byte[]> it = store(streams, USERS).all()) {
      while (it.hasNext()) {
        it.next();
        users++;
      }
    }
    Neighbors n = new Neighbors();
    try (KeyValueIterator<Bytes, byte[]> it = store(streams, COOC).all()) {
      while (it.hasNext()) {
        n.decode(it.next().value);
        products++;
        pairs += n.size;
        longest = Math.max(longest, n.size);
      }
    }
    try (KeyValueIterator<Bytes, byte[]> it = store(streams, POPULARITY).all()) {
      while (it.hasNext()) {
        it.next();
        popular++;
      }
    }
    try (KeyValueIterator<Bytes, byte[]> it = store(streams, DAILY).all()) {
      while (it.hasNext()) {
        KeyValue<Bytes, byte[]> kv = it.next();
        ByteBuffer b = ByteBuffer.wrap(kv.value);
        for (int i = 0; i < totals.length; i++) {
          totals[i] += b.getLong();
        }
        days++;
      }
    }
    long counted = totals[0] + totals[1] + totals[2] + totals[3];
    System.err.printf("streams-cooc: %d interactions applied, %d records of other types skipped, %d rejected%n",
        applied.sum(), otherTypes.sum(), rejected.sum());
    System.err.printf("streams-cooc: stores (all partitions): %s %d users, %s %d products with %d neighbours"
            + " (longest list %d), %s %d products, %s %d partition-days%n",
        USERS, users, COOC, products, pairs, longest, POPULARITY, popular, DAILY, days);
    System.err.printf("streams-cooc: daily counters: views=%d clicks=%d add_to_cart=%d purchases=%d"
            + " revenue_cents=%d; they add up to %d (%s)%n",
        totals[0], totals[1], totals[2], totals[3], totals[4], counted,
        counted == applied.sum() ? "= interactions applied" : "MISMATCH: interactions applied " + applied.sum());
  }

  private static ReadOnlyKeyValueStore<Bytes, byte[]> store(KafkaStreams streams, String name) {
    return streams.store(StoreQueryParameters.fromNameAndType(name, QueryableStoreTypes.keyValueStore()));
  }

  /** log2(2^a + 2^b) without leaving log space (model.rs log_add). */
  static double logAdd(double a, double b) {
    double hi = a >= b ? a : b;
    double lo = a >= b ? b : a;
    return hi + Math.log1p(Math.pow(2.0, lo - hi)) * LOG2_E;
  }

  /**
   * log2 of the forward-decay factor of a time (model.rs log_growth): whole
   * seconds since the landmark plus the milliseconds, over the half-life.
   */
  static double logGrowth(long epochSecond, int millis) {
    return ((double) (epochSecond - LANDMARK_SECS) + (double) millis / 1e3) / HALF_LIFE_SECS;
  }

  private static int actionOf(String name) {
    switch (name) {
      case "view":
        return VIEW;
      case "click":
        return CLICK;
      case "add_to_cart":
        return ADD_TO_CART;
      case "purchase":
        return PURCHASE;
      default:
        return -1;
    }
  }

  /** Sorts by score, best first, then by product id as bytes (model.rs rank: Rust orders strings by their UTF-8). */
  private static int rank(byte[] a, double sa, byte[] b, double sb) {
    int c = Double.compare(sb, sa);
    return c != 0 ? c : Arrays.compareUnsigned(a, b);
  }

  /** What the model remembers of one user (model.rs UserState), decoded from its stored form. */
  static final class User {
    /** Distinct products, oldest first, with the log-score of their strongest action. */
    final byte[][] recent = new byte[RECENT + 1][];
    final double[] recentScore = new double[RECENT + 1];
    int recentSize;
    /** Purchased products, oldest first. */
    final byte[][] purchased = new byte[PURCHASED + 1][];
    int purchasedSize;

    void decode(byte[] stored) {
      recentSize = 0;
      purchasedSize = 0;
      if (stored == null) {
        return;
      }
      ByteBuffer b = ByteBuffer.wrap(stored);
      recentSize = b.get() & 0xff;
      for (int i = 0; i < recentSize; i++) {
        recent[i] = id(b);
        recentScore[i] = b.getDouble();
      }
      purchasedSize = b.get() & 0xff;
      for (int i = 0; i < purchasedSize; i++) {
        purchased[i] = id(b);
      }
    }

    byte[] encode() {
      int size = 2;
      for (int i = 0; i < recentSize; i++) {
        size += 2 + recent[i].length + 8;
      }
      for (int i = 0; i < purchasedSize; i++) {
        size += 2 + purchased[i].length;
      }
      ByteBuffer b = ByteBuffer.allocate(size);
      b.put((byte) recentSize);
      for (int i = 0; i < recentSize; i++) {
        b.putShort((short) recent[i].length).put(recent[i]).putDouble(recentScore[i]);
      }
      b.put((byte) purchasedSize);
      for (int i = 0; i < purchasedSize; i++) {
        b.putShort((short) purchased[i].length).put(purchased[i]);
      }
      return b.array();
    }

    /** The product moves to the newest end of the window, keeping its strongest score. */
    void touch(byte[] product, double weight) {
      double score = weight;
      for (int i = 0; i < recentSize; i++) {
        if (Arrays.equals(recent[i], product)) {
          score = Math.max(recentScore[i], weight);
          System.arraycopy(recent, i + 1, recent, i, recentSize - i - 1);
          System.arraycopy(recentScore, i + 1, recentScore, i, recentSize - i - 1);
          recentSize--;
          break;
        }
      }
      recent[recentSize] = product;
      recentScore[recentSize] = score;
      recentSize++;
      if (recentSize > RECENT) {
        System.arraycopy(recent, 1, recent, 0, RECENT);
        System.arraycopy(recentScore, 1, recentScore, 0, RECENT);
        recentSize = RECENT;
      }
    }

    void purchase(byte[] product) {
      for (int i = 0; i < purchasedSize; i++) {
        if (Arrays.equals(purchased[i], product)) {
          return;
        }
      }
      purchased[purchasedSize++] = product;
      if (purchasedSize > PURCHASED) {
        System.arraycopy(purchased, 1, purchased, 0, PURCHASED);
        purchasedSize = PURCHASED;
      }
    }
  }

  /** A product's co-occurrence log-scores (model.rs Neighbors), decoded from its stored form. */
  static final class Neighbors {
    final byte[][] ids = new byte[2 * NEIGHBORS][];
    final double[] scores = new double[2 * NEIGHBORS];
    int size;

    void decode(byte[] stored) {
      size = 0;
      if (stored == null) {
        return;
      }
      ByteBuffer b = ByteBuffer.wrap(stored);
      size = b.get() & 0xff;
      for (int i = 0; i < size; i++) {
        ids[i] = id(b);
        scores[i] = b.getDouble();
      }
    }

    byte[] encode() {
      int bytes = 1;
      for (int i = 0; i < size; i++) {
        bytes += 2 + ids[i].length + 8;
      }
      ByteBuffer b = ByteBuffer.allocate(bytes);
      b.put((byte) size);
      for (int i = 0; i < size; i++) {
        b.putShort((short) ids[i].length).put(ids[i]).putDouble(scores[i]);
      }
      return b.array();
    }

    /** Adds {@code weight} to the score with {@code other}; prunes to the best 20 at 40. */
    void add(byte[] other, double weight) {
      for (int i = 0; i < size; i++) {
        if (Arrays.equals(ids[i], other)) {
          scores[i] = logAdd(scores[i], weight);
          return; // the list did not grow: it is below 40 since the last prune
        }
      }
      ids[size] = other;
      scores[size] = weight;
      size++;
      if (size >= 2 * NEIGHBORS) {
        prune();
      }
    }

    /** Keeps the NEIGHBORS best, ties broken by product id (model.rs prune). */
    private void prune() {
      for (int i = 1; i < size; i++) { // insertion sort: 40 entries
        byte[] id = ids[i];
        double score = scores[i];
        int j = i - 1;
        while (j >= 0 && rank(ids[j], scores[j], id, score) > 0) {
          ids[j + 1] = ids[j];
          scores[j + 1] = scores[j];
          j--;
        }
        ids[j + 1] = id;
        scores[j + 1] = score;
      }
      Arrays.fill(ids, NEIGHBORS, size, null);
      size = NEIGHBORS;
    }
  }

  private static byte[] id(ByteBuffer b) {
    byte[] id = new byte[b.getShort() & 0xffff];
    b.get(id);
    return id;
  }

  /** One partition's model: the processor of one task, over that task's stores. */
  final class Model implements Processor<byte[], byte[], Void, Void> {
    private final StreamsPeer.Progress progress;
    private KeyValueStore<Bytes, byte[]> users;
    private KeyValueStore<Bytes, byte[]> cooc;
    private KeyValueStore<Bytes, byte[]> popularity;
    private KeyValueStore<Bytes, byte[]> daily;

    // The record being applied (one processor runs on one thread at a time).
    private String userId;
    private String productId;
    private int action;
    private long priceCents; // -1: none
    private String ts; // null: none (the record's timestamp counts)
    private boolean bad;
    private final User user = new User();
    private final Neighbors mine = new Neighbors();
    private final Neighbors theirs = new Neighbors();

    Model(StreamsPeer.Progress progress) {
      this.progress = progress;
    }

    @Override
    public void init(ProcessorContext<Void, Void> context) {
      users = context.getStateStore(USERS);
      cooc = context.getStateStore(COOC);
      popularity = context.getStateStore(POPULARITY);
      daily = context.getStateStore(DAILY);
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
      apply(record);
      progress.record(); // after the record's work
    }

    private void apply(Record<byte[], byte[]> record) {
      switch (parse(record.value())) {
        case OTHER:
          otherTypes.increment();
          return;
        case MALFORMED:
          rejected.increment();
          return;
        default:
          break;
      }
      byte[] userBytes = userId.getBytes(StandardCharsets.UTF_8);
      byte[] product = productId.getBytes(StandardCharsets.UTF_8);
      if (!validId(userId, userBytes) || !validId(productId, product)
          || priceCents > MAX_AMOUNT_CENTS || action == PURCHASE && priceCents < 0
          // key_mismatch: the record must be keyed by its user (shared/src/consume.rs)
          || !Arrays.equals(record.key(), userBytes)) {
        rejected.increment();
        return;
      }

      // The time it counts at (Received::counted_at): the event time, but never
      // after the record reached the topic; no event time, the record's.
      long arrival = record.timestamp();
      long arrivalSecond = Math.floorDiv(arrival, 1000L);
      int arrivalNanos = (int) Math.floorMod(arrival, 1000L) * 1_000_000;
      long second = arrivalSecond;
      int nanos = arrivalNanos;
      if (ts != null) {
        Instant t;
        try {
          t = Instant.parse(ts);
        } catch (DateTimeParseException e) {
          rejected.increment();
          return;
        }
        // Limits::time: not before 1970, at most max_future_secs after arrival.
        if (t.getEpochSecond() < 0 || t.isAfter(Instant.ofEpochMilli(arrival).plusSeconds(MAX_FUTURE_SECS))) {
          rejected.increment();
          return;
        }
        if (t.getEpochSecond() < arrivalSecond
            || t.getEpochSecond() == arrivalSecond && t.getNano() <= arrivalNanos) {
          second = t.getEpochSecond();
          nanos = t.getNano();
        }
      }
      double weight = LOG2_WEIGHT[action] + logGrowth(second, nanos / 1_000_000);

      // What would refuse the event is decided before anything changes.
      Bytes dayKey = Bytes.wrap(ByteBuffer.allocate(4).putInt((int) Math.floorDiv(second, 86_400L)).array());
      byte[] storedDay = daily.get(dayKey);
      ByteBuffer day = ByteBuffer.allocate(40);
      if (storedDay != null) {
        day.put(storedDay).rewind();
      }
      long revenue = day.getLong(32);
      if (action == PURCHASE) {
        try {
          revenue = Math.addExact(revenue, priceCents);
        } catch (ArithmeticException e) {
          rejected.increment(); // the day's revenue would overflow
          return;
        }
      }
      if (!Double.isFinite(weight)) {
        rejected.increment();
        return;
      }

      // model.rs apply_weighted: the product pairs with every other product of
      // the user's recent window, both ways, at this interaction's weight. The
      // product's own list is read and written once for the whole window (its
      // updates do not depend on the others' lists: same result as one by one).
      Bytes userKey = Bytes.wrap(userBytes);
      user.decode(users.get(userKey));
      Bytes productKey = Bytes.wrap(product);
      boolean paired = false;
      for (int i = 0; i < user.recentSize; i++) {
        byte[] other = user.recent[i];
        if (Arrays.equals(other, product)) {
          continue;
        }
        if (!paired) {
          mine.decode(cooc.get(productKey));
          paired = true;
        }
        mine.add(other, weight);
        Bytes otherKey = Bytes.wrap(other);
        theirs.decode(cooc.get(otherKey));
        theirs.add(product, weight);
        cooc.put(otherKey, theirs.encode());
      }
      if (paired) {
        cooc.put(productKey, mine.encode());
      }
      user.touch(product, weight);
      if (action == PURCHASE) {
        user.purchase(product);
      }
      users.put(userKey, user.encode());

      byte[] storedScore = popularity.get(productKey);
      double score = storedScore == null ? Double.NEGATIVE_INFINITY : ByteBuffer.wrap(storedScore).getDouble();
      popularity.put(productKey, ByteBuffer.allocate(8).putDouble(logAdd(score, weight)).array());

      // recommender.rs: per (partition, UTC day) views, clicks, add_to_cart, purchases, revenue_cents.
      day.putLong(8 * action, day.getLong(8 * action) + 1);
      day.putLong(32, revenue);
      daily.put(dayKey, day.array());
      applied.increment();
    }

    /**
     * Reads a record's JSON object in one pass (Jackson's streaming parser, no
     * tree): INTERACTION with its fields set, OTHER when its {@code type} is
     * another one (read no further once the type is known), MALFORMED otherwise.
     */
    private int parse(byte[] value) {
      userId = null;
      productId = null;
      action = -1;
      priceCents = -1;
      ts = null;
      bad = false;
      if (value == null) {
        return MALFORMED;
      }
      boolean interaction = false;
      try (JsonParser p = JSON.createParser(value)) {
        if (p.nextToken() != JsonToken.START_OBJECT) {
          return MALFORMED;
        }
        JsonToken t;
        while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
          String field = p.currentName();
          JsonToken v = p.nextToken();
          switch (field) {
            case "type":
              if (v != JsonToken.VALUE_STRING) {
                return MALFORMED;
              }
              if (!"interaction".equals(p.getText())) {
                return OTHER; // other types are skipped by their type alone
              }
              interaction = true;
              break;
            case "user_id":
              userId = string(p, v);
              break;
            case "product_id":
              productId = string(p, v);
              break;
            case "action": {
              String name = string(p, v);
              action = name == null ? -1 : actionOf(name);
              bad |= action < 0;
              break;
            }
            case "price_cents":
              if (v == JsonToken.VALUE_NUMBER_INT && p.getNumberType() != JsonParser.NumberType.BIG_INTEGER
                  && p.getLongValue() >= 0) {
                priceCents = p.getLongValue();
              } else if (v != JsonToken.VALUE_NULL) {
                bad = true;
              }
              break;
            case "ts":
              if (v != JsonToken.VALUE_NULL) {
                ts = string(p, v);
              }
              break;
            default:
              p.skipChildren();
          }
        }
        if (t != JsonToken.END_OBJECT || p.nextToken() != null) {
          return MALFORMED;
        }
      } catch (IOException e) {
        return MALFORMED;
      }
      if (!interaction) {
        return MALFORMED; // no type
      }
      return bad || userId == null || productId == null || action < 0 ? MALFORMED : INTERACTION;
    }

    private String string(JsonParser p, JsonToken v) throws IOException {
      if (v != JsonToken.VALUE_STRING) {
        bad = true;
        p.skipChildren();
        return null;
      }
      return p.getText();
    }
  }

  /** Limits::id: not blank, at most 256 bytes, no control characters. */
  private static boolean validId(String id, byte[] utf8) {
    if (id.isBlank() || utf8.length > MAX_ID_BYTES) {
      return false;
    }
    for (int i = 0; i < id.length(); i++) {
      if (Character.isISOControl(id.charAt(i))) {
        return false;
      }
    }
    return true;
  }
}
