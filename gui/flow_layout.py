"""A layout that places its items left to right and wraps them onto more rows when the width runs
out, so a dock's control row stays whole at any dock width instead of being clipped.

Give it a widget of its own (``FlowLayout(box)``): it sets that widget's minimum height to what
its rows need at the current width. (It does not report height-for-width: a scroll area would
then ask the whole dock body for its *preferred* height and scroll a plot that could shrink.)

:func:`labelled` keeps a caption and its control together (they wrap as one item); items whose
widget grows horizontally (``QSizePolicy.Expanding``, e.g. a slider) share a row's spare width.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLayout, QLayoutItem, QSizePolicy, QWidget


class FlowLayout(QLayout):
    """Items in rows of the available width; a row's height is its tallest item's."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self.setContentsMargins(0, 0, 0, 0)

    # ---- QLayout's item protocol ------------------------------------------------------------
    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802 (Qt naming)
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    # ---- sizes ----------------------------------------------------------------------------------
    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802
        return Qt.Orientation(0)

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._arrange(QRect(0, 0, width, 0), apply=False)

    def minimumSize(self) -> QSize:  # noqa: N802
        size = QSize()
        for item in self._shown():
            size = size.expandedTo(item.minimumSize())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    def sizeHint(self) -> QSize:  # noqa: N802
        """One row of everything (what it asks for when there is room)."""
        width = sum(i.sizeHint().width() for i in self._shown()) + self._spacing * max(0, len(self._shown()) - 1)
        height = max((i.sizeHint().height() for i in self._shown()), default=0)
        m = self.contentsMargins()
        return QSize(width + m.left() + m.right(), height + m.top() + m.bottom())

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802
        super().setGeometry(rect)
        height = self._arrange(rect, apply=True)
        box = self.parentWidget()
        if box is not None and box.layout() is self and box.minimumHeight() != height:
            box.setMinimumHeight(height)  # relayout once: the rows need this height at this width

    # ---- placement ------------------------------------------------------------------------------
    def _shown(self) -> list[QLayoutItem]:
        return [i for i in self._items if not i.isEmpty()]

    def rows(self, width: int) -> list[list[QLayoutItem]]:
        """The items of each row at ``width`` (contents width, margins excluded)."""
        rows: list[list[QLayoutItem]] = [[]]
        used = 0
        for item in self._shown():
            w = min(item.sizeHint().width(), width)
            if rows[-1] and used + self._spacing + w > width:
                rows.append([])
                used = 0
            used += (self._spacing if rows[-1] else 0) + w
            rows[-1].append(item)
        return [r for r in rows if r]

    def _arrange(self, rect: QRect, apply: bool) -> int:
        m = self.contentsMargins()
        inner = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        y = inner.y()
        for row in self.rows(inner.width()):
            widths = [min(i.sizeHint().width(), inner.width()) for i in row]
            spare = inner.width() - sum(widths) - self._spacing * (len(row) - 1)
            growing = [k for k, i in enumerate(row) if _grows(i)]
            for k in growing:
                widths[k] += spare // len(growing)
            height = max(i.sizeHint().height() for i in row)
            x = inner.x()
            for item, w in zip(row, widths, strict=True):
                if apply:
                    h = item.sizeHint().height()
                    item.setGeometry(QRect(QPoint(x, y + (height - h) // 2), QSize(w, h)))
                x += w + self._spacing
            y += height + self._spacing
        return y - self._spacing - rect.y() + m.bottom() if self._shown() else m.top() + m.bottom()


def _grows(item: QLayoutItem) -> bool:
    widget = item.widget()
    growing = (QSizePolicy.Policy.Expanding, QSizePolicy.Policy.MinimumExpanding)
    return widget is not None and widget.sizePolicy().horizontalPolicy() in growing


def labelled(caption: str, *widgets: QWidget, grow: bool = False) -> QWidget:
    """A caption and its control(s) side by side, as one item of a :class:`FlowLayout`
    (``grow``: the group takes a share of its row's spare width)."""
    group = QWidget()
    lay = QHBoxLayout(group)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(3)
    if caption:
        lay.addWidget(QLabel(caption))
    for w in widgets:
        lay.addWidget(w, 1 if grow else 0)
    if grow:
        group.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    return group



class WrapLabel(QLabel):
    """A word-wrapped label that reserves ``lines`` lines instead of reporting height-for-width:
    in a dock's scroll area a height-for-width child makes the area size the whole body by its
    children's *preferred* heights (a plot's 480 px), and the dock scrolls instead of the plot
    shrinking. (QLabel turns height-for-width back on at every setText, hence the override.)"""

    def __init__(self, text: str = "", lines: int = 3, parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setMinimumHeight(lines * self.fontMetrics().lineSpacing() + 4)

    def hasHeightForWidth(self) -> bool:  # noqa: N802 (Qt naming)
        return False
