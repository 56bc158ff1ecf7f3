"""The presets of the generic `webhook` source: how one sender's JSON becomes an Event.

`owncast` and `blrec` know their sender's documented bodies; `custom` maps any JSON body
through the field and kind tables in the source's config. Each module's `parse` takes
the source's name and its settings and returns None for a type it does not notify.
"""
