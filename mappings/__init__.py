"""Index definitions (*.json) and Kibana saved objects (kibana/), shipped with the package as data."""
