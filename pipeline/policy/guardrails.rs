use crate::codec::Adjustment;
use crate::policy::plan::{Plan, Resources, Verdict};
pub struct FleetLimits {
    pub max_actions_per_minute: u32,
    pub dry_run: bool,
}
pub struct Guardrails;
impl Guardrails {
    pub fn new(_: &super::Policies, _: FleetLimits) -> Self {
        Self
    }
    pub fn check(&self, _: &Adjustment, _: &Resources) -> Verdict {
        todo!()
    }
    pub fn remember(&mut self, _: &Adjustment, _: &Plan) {}
}
