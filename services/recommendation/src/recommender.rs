//! The worker (Postgres mode of `shared::worker`): interactions fold into the
//! owned partitions' models; each batch's changes, daily counters and
//! freshness commit with its offsets.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use shared::consume::Received;
use shared::event::{Action, Envelope, EventBody, EventType};
use shared::worker::{Postgres, Refused, Worker};
use sqlx::{PgConnection, PgPool};

use crate::model::PartitionModel;
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

    fn wants(&self, event_type: EventType) -> bool {
        event_type == EventType::Interaction
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

    async fn apply(&mut self, tx: &mut PgConnection, events: &[Received]) -> anyhow::Result<()> {
        let mut daily: BTreeMap<(i32, chrono::NaiveDate), Daily> = BTreeMap::new();
        let mut latest: HashMap<i32, DateTime<Utc>> = HashMap::new();
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
            let model = self
                .partitions
                .get_mut(&received.partition)
                .ok_or_else(|| anyhow::anyhow!("partition {} is not loaded", received.partition))?;
            model.apply(interaction, ts, self.half_life_secs)?;

            let day = daily
                .entry((received.partition, ts.date_naive()))
                .or_default();
            match interaction.action {
                Action::View => day.views += 1,
                Action::Click => day.clicks += 1,
                Action::AddToCart => day.add_to_cart += 1,
                Action::Purchase => {
                    day.purchases += 1;
                    // Prices are bounded by the parser; a day's sum still must not wrap.
                    let price = i64::try_from(interaction.price_cents.unwrap_or(0))
                        .map_err(|_| Refused::new("refused", "price out of range"))?;
                    day.revenue_cents = day.revenue_cents.checked_add(price).ok_or_else(|| {
                        Refused::new("refused", "the day's revenue would overflow")
                    })?;
                }
            }
            let newest = latest.entry(received.partition).or_insert(ts);
            *newest = (*newest).max(ts);
        }
        for (&partition, model) in &mut self.partitions {
            store::save(tx, partition, model).await?;
            // If the transaction then fails, the sink reloads this partition from Postgres.
            model.clean();
        }
        store::add_daily(tx, &daily).await?;
        store::touch_partitions(tx, &latest).await?;
        Ok(())
    }
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
