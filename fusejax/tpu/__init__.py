"""TPU slices for TPU Research Cloud users: create through queued resources, set up, launch, supervise, delete.

Drives `gcloud` (never imports jax): `gcloud.py` builds the commands, `remote.py` the shell run on the workers,
`supervisor.py` brings a preempted stage back, `cli.py` is `fusejax tpu ...`.
"""
