"""Stand-ins for resizedriver.host.Host and resizedriver.guest.Guest."""

from __future__ import annotations

from typing import Optional

from lxml import etree


class FakeGuest:
    def __init__(self, uuid: str, name: str, xml: str,
                 running: bool = True) -> None:
        self.uuid = uuid
        self.name = name
        self._xml = xml
        self.running = running
        self.paused = False
        self.calls: list[tuple] = []

    def xml(self) -> str:
        return self._xml

    def live_xml(self) -> str:
        return self._xml

    def is_running(self) -> bool:
        return self.running

    def power_off(self, timeout: float, retry_interval: float) -> bool:
        self.calls.append(('power_off', timeout, retry_interval))
        self.running = False
        return True

    def start(self) -> None:
        self.calls.append(('start',))
        self.running = True

    def ensure_running(self, timeout: float) -> None:
        if not self.running:
            self.start()

    def wait_running(self, timeout: float) -> None:
        assert self.running, 'wait_running on a guest never started'

    def is_paused(self) -> bool:
        return self.paused

    def resume(self) -> None:
        self.calls.append(('resume',))
        self.paused = False

    def destroy(self) -> None:
        self.calls.append(('destroy',))
        self.running = False

    @property
    def call_names(self) -> list[str]:
        return [c[0] for c in self.calls]


class FakeHost:
    def __init__(self, guests: list[FakeGuest]) -> None:
        self.guests = guests

    def lookup(self, uuid_or_name: str) -> Optional[FakeGuest]:
        for g in self.guests:
            if uuid_or_name in (g.uuid, g.name):
                return g
        return None

    def define(self, xml: str) -> FakeGuest:
        root = etree.fromstring(xml.encode())
        uuid, name = root.findtext('uuid'), root.findtext('name')
        guest = self.lookup(uuid)
        if guest is None:
            guest = FakeGuest(uuid, name, xml, running=False)
            self.guests.append(guest)
        guest._xml = xml
        return guest

    def remove(self, uuid: str) -> None:
        self.guests = [g for g in self.guests if g.uuid != uuid]

    @staticmethod
    def virt_type(requested: str) -> str:
        return requested

    @staticmethod
    def hypervisor_version() -> tuple[int, int, int]:
        return (7, 2, 22)
