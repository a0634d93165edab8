"""The job worker: procrastinate tasks that send confirmation e-mails and webhooks."""
