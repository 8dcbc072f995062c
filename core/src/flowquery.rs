//! The flow-query port: what the API's flow listing, aggregation and time series (and the
//! plugins' `flows` and `flow-stats` capabilities) ask of
//! wherever the flows live. This node's [`Store`] answers for one agent; a cluster's
//! ClickHouse (the `weir-clickhouse` adapter, behind `weir server`) answers for every agent
//! writing into it, with the same filter language and the same answers' shapes.

use crate::aggregate::Ranked;
use crate::query::{Expr, Metric, TimeRange};
use crate::schema::FieldDef;
use crate::store::collect::GroupValues;
use crate::store::{Buckets, GroupKey, ListRequest, ListResult, Store, StoreError, Totals};
use std::collections::HashMap;

/// Flows to list and aggregate. Implementations keep the store's semantics: a flow is in a
/// range when it started at or before its end and ended at or after its start; bytes,
/// packets and drops are scaled back by `Sampling`; `flows` counts records; time buckets go
/// by `TimeFlowEndMs`.
pub trait FlowQuery: Send + Sync {
    /// A page of matching flows and how many matched in all.
    fn list(&self, req: &ListRequest) -> Result<ListResult, StoreError>;

    /// Totals per group of `group_by` values (and per time bucket when `buckets` is set).
    fn aggregate(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        buckets: Option<Buckets>,
    ) -> Result<HashMap<GroupKey, Totals>, StoreError>;

    /// The `k` groups of `group_by` largest by `metric` (ties by their values), with the
    /// sums of the rest and of every matching flow.
    fn top(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        metric: Metric,
        k: usize,
    ) -> Result<Ranked, StoreError> {
        let groups = self.aggregate(filter, range, group_by, None)?;
        Ok(crate::aggregate::rank(groups, metric, k))
    }

    /// One number field's non-zero values per group of matching flows (as stored, not scaled
    /// by sampling), for quantiles ([`crate::store::collect::quantiles`]); a group without any
    /// such value is left out.
    fn group_values(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        value: &'static FieldDef,
    ) -> Result<GroupValues, StoreError>;

    /// Up to `limit` matching flows after the cursor `after_seq` (0: from the first), each
    /// with its cursor, lowest first: what `flow-fields`' `select` pages history with. The
    /// store's cursors are sequence numbers; elsewhere they may be positions in a stable
    /// order, which resume correctly while no flow arrives late into the range.
    fn select(
        &self,
        filter: &Expr,
        range: &TimeRange,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, crate::Flow)>, StoreError>;

    /// Where the flows are, for status (`local store`, `clickhouse http://host:8123/weir`).
    fn describe(&self) -> String;
}

impl FlowQuery for Store {
    fn list(&self, req: &ListRequest) -> Result<ListResult, StoreError> {
        Store::list(self, req)
    }

    fn aggregate(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        buckets: Option<Buckets>,
    ) -> Result<HashMap<GroupKey, Totals>, StoreError> {
        Store::aggregate(self, filter, range, group_by, buckets)
    }

    fn top(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        metric: Metric,
        k: usize,
    ) -> Result<Ranked, StoreError> {
        Store::top(self, filter, range, group_by, metric, k)
    }

    fn group_values(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        value: &'static FieldDef,
    ) -> Result<GroupValues, StoreError> {
        // Its collector makes a group at its first value: none is empty.
        Store::group_values(self, filter, range, group_by, value)
    }

    fn select(
        &self,
        filter: &Expr,
        range: &TimeRange,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, crate::Flow)>, StoreError> {
        Store::select(self, filter, range, after_seq, limit)
    }

    fn describe(&self) -> String {
        "local store".into()
    }
}
