"""Stage 4, alert: clinical and technical alarms with priorities, latching,
acknowledgement, snooze and escalation.

Not built yet: issue #7. Nothing in the gateway raises alarms today, and the demo's summary
says so rather than printing a zero that looks like a result.
"""
