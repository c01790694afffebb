"""The teacher's half of the loop (issue 13): the review page, learning from corrections."""
