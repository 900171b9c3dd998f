"""Load generation against a running engine: `smartroute simulate` and `smartroute bench e2e`."""
