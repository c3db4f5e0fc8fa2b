"""Pictures of what a trained model does (attention, retrievals, shared sketch buckets)."""
