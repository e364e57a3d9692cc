"""Foundation: array backend, profiles, cached datasets, results records and the scorecard,
figure style and shared argument checks. Imports nothing else from the package."""
