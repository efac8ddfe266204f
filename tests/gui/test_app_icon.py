"""The application and its window carry the shipped icon; the desktop file name matches the entry."""

from __future__ import annotations

import configparser

import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QGuiApplication, QIcon, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

from engine.desktop_install import entry_template, icon_source
from gui.app import make_app

SIZE = 64


def _pixels(image: QImage) -> np.ndarray:
    """``image`` as a (SIZE, SIZE, 4) uint8 array (premultiplied ARGB)."""
    image = image.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
    assert (image.width(), image.height()) == (SIZE, SIZE)
    data = np.frombuffer(image.constBits(), np.uint8, image.sizeInBytes())
    return data.reshape(SIZE, image.bytesPerLine())[:, : SIZE * 4].reshape(SIZE, SIZE, 4).copy()


def _rendered_from_file() -> np.ndarray:
    """The shipped SVG drawn by QSvgRenderer, independently of QIcon."""
    renderer = QSvgRenderer(str(icon_source()))
    assert renderer.isValid()
    image = QImage(SIZE, SIZE, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    return _pixels(image)


def _icon_pixels(icon: QIcon) -> np.ndarray:
    return _pixels(icon.pixmap(QSize(SIZE, SIZE)).toImage())


def test_make_app_sets_the_shipped_icon_and_desktop_file_name(qapp):
    qapp.setWindowIcon(QIcon())  # start from none: make_app must set both
    QGuiApplication.setDesktopFileName("")
    app = make_app(["aiba-studio"])
    assert app is qapp
    icon = app.windowIcon()
    assert not icon.isNull()
    expected = _rendered_from_file()
    assert expected[..., 3].max() == 255 and len(np.unique(expected.reshape(-1, 4), axis=0)) > 16
    diff = np.abs(_icon_pixels(icon).astype(int) - expected)
    assert diff.max() <= 2, f"the application icon is not the shipped SVG (differs by {diff.max()})"
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(entry_template())
    assert QGuiApplication.desktopFileName() == entry_template().stem == entry["Desktop Entry"]["Icon"]


def test_main_window_shows_the_shipped_icon(qapp, make_window):
    make_app(["aiba-studio"])
    window = make_window(model="tiny:audioldm2")
    assert not window.windowIcon().isNull()
    diff = np.abs(_icon_pixels(window.windowIcon()).astype(int) - _rendered_from_file())
    assert diff.max() <= 2, f"the window icon is not the shipped SVG (differs by {diff.max()})"
