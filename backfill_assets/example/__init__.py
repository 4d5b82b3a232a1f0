"""The shipped example: orders, refunds and customers.

Everything that knows the example domain lives here: the seeded generator and the pilot
fixtures (``generator.py``), the late-row writer behind ``backfill-assets arrive``
(``late_rows.py``) and the demo (``demo.py``). Its plans are ordinary ``BackfillPlan``
components in ``backfill_assets/defs/``; the framework modules never name its tables.
"""
