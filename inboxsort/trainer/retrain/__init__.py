"""Retraining on corrections: plan the images, train in a child process, gate, register."""
