"""Workflows: the DAG-to-canvas compiler, `when` conditions, step inputs, the step
tasks, the workflow store and service, and the saga that undoes a failed workflow.
"""
