"""siyu: relationship-tier, churn, promotion and KOC predictions for a brand's private domain."""

__version__ = "0.1.0"
