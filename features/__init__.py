"""The data layer: event schema, feature spec, online runtime and the data stages.

This package imports nothing heavy: ``features.online``, ``features.spec`` and
``features.schema`` run on devices with the base dependencies only; the stages
(``features.simulate``, ``features.ingest``, ``features.batch``) need the ``train`` extra.
"""
