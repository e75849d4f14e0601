"""What an administrator uses: the `rostersync` command (cli.py), its views (views.py), the dry run,
the status page (templates/, static/), the notifications consent and the status page's IAP check."""
