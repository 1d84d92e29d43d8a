"""Shared vocabulary of every bai component; imports no other bai package."""
