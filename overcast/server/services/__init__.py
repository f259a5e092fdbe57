"""Service layer shared by the REST API and the dashboard: DB work plus the checks."""
