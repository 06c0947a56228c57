"""Master patient index: link facility Patient records of one resident to one consortium person."""
