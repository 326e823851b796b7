"""Controller-side P4Runtime helpers on top of finsy."""
