"""The folder review's overview: the scoring's progress (with *Stop*), a *File order* toggle, *Next flagged*, and a
sortable table of the folder (name, score, verdict, objects, flags); clicking a row opens that image. Lives in the
Review tab, below its buttons; narrow (the dock is at most 320 px wide: columns shrink, names elide).

It shows what :class:`~.folder.FolderPanel` gives it and calls back into it; it holds no review state.
"""
from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QObject, Qt
from qtpy.QtWidgets import (QAbstractItemView, QCheckBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
                            QProgressBar, QPushButton, QTableWidget, QTableWidgetItem, QWidget)

from ..review.flags import FLAG_LABELS

COLUMNS = ("name", "score", "verdict", "objects", "flags")
_WIDTHS = (0, 42, 60, 28, 62)  # px; the name takes the rest of the dock's 320 px (long names and flags elide)
_HEADERS = ("Name", "Score", "Verdict", "Obj.", "Flags")
_TIPS = {
    "qa_file_order": "Walk the folder in file order. Unticked (the default), Next and Accept go worst first: "
                     "highest image score (most anomalous) first, once the folder is scored in the background.",
    "qa_next_flagged": "Go to the next image (in the current order) that needs a look (Alt+N): an undecided image "
                       "with a flag, or a verdict its score contradicts; when there is none, the next undecided "
                       "image. Flags: " + "; ".join(FLAG_LABELS) + ".",
    "qa_scoring": "Scoring the folder in the background (mutual scoring from 5 images); the review goes worst "
                  "first when it is done.",
    "qa_stop_scoring": "Stop scoring the folder: the review stays in file order (reopen it to score again).",
    "qa_table": "Every image of the folder. Click a column title to sort by it, a row to open that image.",
}


class _Item(QTableWidgetItem):
    """A cell that sorts by its sort value (numbers as numbers, missing ones last), not by its text."""

    def __init__(self, text: str, sort_value, index: int):
        super().__init__(text)
        self.sort_value = sort_value
        self.setData(Qt.ItemDataRole.UserRole, index)
        self.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)

    def __lt__(self, other):  # noqa: D105 (Qt's sort protocol)
        if isinstance(other, _Item):
            return self.sort_value < other.sort_value
        return super().__lt__(other)


class FolderTable(QObject):
    """The overview controls, added to the Review tab's form (``layout``).

    Args:
        layout: the tab's QFormLayout.
        on_open: called with an image's session position when its row is clicked.
        on_worst_first: called with True for worst first, False when *File order* is ticked.
        on_next_flagged: called when *Next flagged* is pressed.
        on_stop: called when *Stop* (the scoring) is pressed.
        file_order: *File order* starts ticked (the dock remembers it: ``WidgetSettings.qa_file_order``, bound
            by its object name ``qa_file_order``, see :mod:`.settings_binding`).
    """

    def __init__(self, layout: QFormLayout, on_open: Callable[[int], None], on_worst_first: Callable[[bool], None],
                 on_next_flagged: Callable[[], None], on_stop: Callable[[], None] | None = None,
                 file_order: bool = False):
        super().__init__(layout.parentWidget())
        self.file_order = QCheckBox("File order")
        self.file_order.setObjectName("qa_file_order")
        self.file_order.setChecked(bool(file_order))
        self.next_flagged = QPushButton("Next flagged (Alt+N)")
        self.scoring = QProgressBar()
        self.scoring.setRange(0, 100)
        self.scoring.setFormat("scoring %p%")
        self.stop_scoring = QPushButton("Stop")
        self.scoring_row = QWidget()
        row = QHBoxLayout(self.scoring_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.scoring, 1)
        row.addWidget(self.stop_scoring)
        self.scoring_row.setVisible(False)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        for w, key in ((self.file_order, "qa_file_order"), (self.next_flagged, "qa_next_flagged"),
                       (self.table, "qa_table"), (self.scoring, "qa_scoring"), (self.stop_scoring, "qa_stop_scoring")):
            w.setToolTip(_TIPS[key])
        self.table.setHorizontalHeaderLabels(list(_HEADERS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        header = self.table.horizontalHeader()
        header.setMinimumSectionSize(28)
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col, width in enumerate(_WIDTHS[1:], start=1):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(col, width)
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(False)
        header.sectionClicked.connect(self._sort_by)
        self.sorted_by: tuple[int, Qt.SortOrder] | None = None  # None: review order
        self.table.setMinimumHeight(160)
        toggles = QWidget()
        line = QHBoxLayout(toggles)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(self.file_order)
        line.addWidget(self.next_flagged, 1)
        layout.addRow(toggles)  # one spanning row: the form's label column is wide enough already
        layout.addRow(self.scoring_row)
        layout.addRow(self.note)
        layout.addRow(self.table)
        self._on_open = on_open
        self._filling = False
        self.file_order.toggled.connect(lambda on: on_worst_first(not on))
        if on_stop is not None:
            self.stop_scoring.clicked.connect(lambda: on_stop())
        self.next_flagged.clicked.connect(lambda: on_next_flagged())
        self.table.cellClicked.connect(self._clicked)

    def fill(self, rows: list[dict], current: int | None) -> None:
        """Show ``rows`` (dicts with index, name, score, verdict, objects, flags; in review order) and select the
        row of session position ``current``. The user's sort column, if any, is kept."""
        self._filling = True
        table = self.table
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            i, score, objects = row["index"], row["score"], row["objects"]
            cells = (
                _Item(row["name"], (row["name"].casefold(), r), i),
                _Item("—" if score is None else f"{score:.3f}", (score is None, -(score or 0.0), r), i),
                _Item(row["verdict"] or "—", (row["verdict"] or "~", r), i),
                _Item("—" if objects is None else str(objects), (objects is None, objects or 0, r), i),
                _Item(", ".join(row["flags"]), (not row["flags"], ", ".join(row["flags"]), r), i),
            )
            for col, item in enumerate(cells):
                item.setToolTip(row["name"] + (": " + ", ".join(row["flags"]) if row["flags"] else ""))
                table.setItem(r, col, item)
        if self.sorted_by is not None:
            table.sortItems(*self.sorted_by)
        self.select(current)
        self._filling = False

    def show_scoring(self, fraction: float | None, text: str = "") -> None:
        """Show the scoring's progress (``fraction`` 0..1; None hides the bar) and a note below it."""
        self.scoring_row.setVisible(fraction is not None)
        if fraction is not None:
            self.scoring.setValue(max(0, min(100, int(round(100 * fraction)))))
        self.note.setText(text)
        self.note.setVisible(bool(text))

    def _sort_by(self, column: int) -> None:
        """A click on a column title: sort by it (a second click reverses the order)."""
        ascending = Qt.SortOrder.AscendingOrder
        if self.sorted_by is not None and self.sorted_by[0] == column:
            order = Qt.SortOrder.DescendingOrder if self.sorted_by[1] == ascending else ascending
        else:
            order = ascending
        self.sorted_by = (column, order)
        header = self.table.horizontalHeader()
        header.setSortIndicatorShown(True)
        header.setSortIndicator(column, order)
        self.table.sortItems(column, order)

    def select(self, index: int | None) -> None:
        """Select the row of session position ``index`` (none when None)."""
        table = self.table
        for r in range(table.rowCount()):
            item = table.item(r, 0)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == index:
                table.selectRow(r)
                table.scrollToItem(item)
                return
        table.clearSelection()

    def row_indices(self) -> list[int]:
        """Session positions of the rows, top to bottom (as shown, after any sort)."""
        return [self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in range(self.table.rowCount())]

    def click_row(self, row: int) -> None:
        """Open the image of ``row`` (what a click does)."""
        self._clicked(row, 0)

    def _clicked(self, row: int, column: int) -> None:
        if self._filling:
            return
        item = self.table.item(row, 0)
        if item is not None:
            self._on_open(int(item.data(Qt.ItemDataRole.UserRole)))
