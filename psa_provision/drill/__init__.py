"""`drill phase3 KIND`: lose one member under the app's own writes and measure what the clients saw.

kinds.py (what each KIND stops and its targets), measure.py (pure: acked writes and what the stores
hold after healing -> lost, duplicates, error windows), writer.py (the bounded writer through the
VIP), redis_writer.py (the bounded Redis writer with and without WAIT, on a member the fault spares),
run.py (fault, restore, heal, read back).
"""
