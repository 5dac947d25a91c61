"""The stage registry and runner behind `asterai pipeline`."""
