"""Unit tests of alert triggers: the Alertmanager webhook payload parser."""
