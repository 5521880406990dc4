"""Guest components: each module's `plan(ctx, facts) -> list[Change]` is pure (no side effects)."""
