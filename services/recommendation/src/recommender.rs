//! The worker (Postgres mode of `shared::worker`): interactions fold into the
//! owned partitions' models; each batch's changes, daily counters and
//! freshness commit with its offsets.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use shared::consume::Received;
use shared::event::{Action, Envelope, Event, EventBody, EventType};
use shared::worker::{Postgres, Refusals, Refused, Worker};
use sqlx::{PgConnection, PgPool};

use crate::model::{self, PartitionModel};
use crate::store::{self, Daily};

/// The models of the partitions this instance owns.
pub struct Recommender {
    partitions: HashMap<i32, PartitionModel>,
    half_life_secs: f64,
}

impl Recommender {
    pub fn new(half_life_secs: f64) -> Self {
        Self {
            partitions: HashMap::new(),
            half_life_secs,
        }
    }
}

impl Worker for Recommender {
    type Mode = Postgres;

    /// Every type, checked in full: the streaming worker is the stream's
    /// gate of last resort, so a bad record of a type no other worker reads
    /// (a `page_access` with a broken field, a `type` given twice) still
    /// reaches the DLQ. Only interactions are wanted.
    const READS: &'static [EventType] = &EventType::ALL;

    fn wants(event: &Event) -> bool {
        matches!(event.body, EventBody::Interaction(_))
    }

    async fn load(&mut self, pool: &PgPool, partition: i32) -> anyhow::Result<()> {
        let model = store::load(pool, partition).await?;
        tracing::info!(
            partition,
            users = model.users.len(),
            products = model.popularity.len(),
            "partition state loaded"
        );
        self.partitions.insert(partition, model);
        Ok(())
    }

    fn unload(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[Received],
    ) -> anyhow::Result<Refusals> {
        let mut daily: BTreeMap<(i32, chrono::NaiveDate), Daily> = BTreeMap::new();
        let mut latest: HashMap<i32, DateTime<Utc>> = HashMap::new();
        let mut refusals = Refusals::none();
        for received in events {
            // Interactions are small and always inline; other types are skipped cheaply.
            let Envelope::Inline(event) = &received.envelope else {
                continue;
            };
            let EventBody::Interaction(interaction) = &event.body else {
                continue;
            };
            let Some(ts) = event_time(received) else {
                continue;
            };
            // What would refuse the event is decided before anything changes.
            let key = (received.partition, ts.date_naive());
            let so_far = daily.get(&key).map_or(0, |day| day.revenue_cents);
            let counted = match interaction.action {
                Action::Purchase => revenue_after(so_far, interaction.price_cents),
                _ => Ok(so_far),
            };
            let weighed = counted.and_then(|revenue| {
                Ok((
                    revenue,
                    model::weight_of(interaction.action, ts, self.half_life_secs)?,
                ))
            });
            let (revenue, weight) = match weighed {
                Ok(fine) => fine,
                Err(refused) => {
                    refusals.refuse(received, refused);
                    continue;
                }
            };
            let model = self
                .partitions
                .get_mut(&received.partition)
                .ok_or_else(|| anyhow::anyhow!("partition {} is not loaded", received.partition))?;
            // A refusal from here on comes after the model changed: an error,
            // so the runtime reloads the partition and bisects to the event.
            model.apply_weighted(interaction, weight)?;
            let day = daily.entry(key).or_default();
            day.revenue_cents = revenue;
            match interaction.action {
                Action::View => day.views += 1,
                Action::Click => day.clicks += 1,
                Action::AddToCart => day.add_to_cart += 1,
                Action::Purchase => day.purchases += 1,
            }
            let newest = latest.entry(received.partition).or_insert(ts);
            *newest = (*newest).max(ts);
        }
        store::save(tx, &self.partitions).await?;
        // If the transaction then fails, the sink reloads the batch's partitions from Postgres.
        self.partitions.values_mut().for_each(PartitionModel::clean);
        store::add_daily(tx, &daily).await?;
        store::touch_partitions(tx, &latest).await?;
        Ok(refusals)
    }
}

/// The day's revenue with a purchase's price added, or why it cannot be
/// (prices are bounded by the parser; a day's sum still must not wrap).
fn revenue_after(so_far: i64, price_cents: Option<u64>) -> Result<i64, Refused> {
    let price = i64::try_from(price_cents.unwrap_or(0))
        .map_err(|_| Refused::new("refused", "price out of range"))?;
    so_far
        .checked_add(price)
        .ok_or_else(|| Refused::new("refused", "the day's revenue would overflow"))
}

/// The time an interaction counts at ([`Received::counted_at`], the same
/// as the replay's); a clamped event time is counted.
fn event_time(received: &Received) -> Option<DateTime<Utc>> {
    let counted = received.counted_at();
    if counted != received.ts() {
        metrics::counter!("kappa_recommendation_event_time_clamped_total").increment(1);
    }
    counted
}
