"""Steering a campaign: its parameters, the Colmena thinker and task server, and the campaign that assembles them.

- :mod:`moldesign.steer.params`: :class:`~moldesign.steer.params.RunParams`, the run's parameters
- :mod:`moldesign.steer.checks`: validating a campaign's inputs before anything is created
- :mod:`moldesign.steer.campaign`: :class:`~moldesign.steer.campaign.Campaign`, assembling, running and recording
- :mod:`moldesign.steer.thinker`, :mod:`moldesign.steer.generator`: the thinker's agents (task plumbing)
- :mod:`moldesign.steer.results`, :mod:`moldesign.steer.records`: the result dictionary and record lines
- :mod:`moldesign.steer.server`, :mod:`moldesign.steer.queues`: the Parsl task server and the Colmena queues
"""
