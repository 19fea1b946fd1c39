"""A tiny package the example suite tests; installed in editable mode in the project's venv."""
import math

__all__ = ["Square", "Circle", "area_sum"]


class Square:
    def __init__(self, side: float) -> None:
        if side < 0:
            raise ValueError("side must be >= 0")
        self.side = side

    def area(self) -> float:
        return self.side * self.side


class Circle:
    def __init__(self, radius: float) -> None:
        if radius < 0:
            raise ValueError("radius must be >= 0")
        self.radius = radius

    def area(self) -> float:
        return math.pi * self.radius ** 2


def area_sum(shapes) -> float:
    return sum(s.area() for s in shapes)
