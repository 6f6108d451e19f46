"""The browser views: static pages (web/) served with their broker address, and an MQTT relay."""
