"""The test Ceph (``tools/ceph``) as the tests see it: Nova's options for
it, and what the cluster holds (images, their sizes, their snapshots),
read with the ``rbd`` client as client.nova, as an operator would."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess

from tests.lib import hostenv
from tests.lib.testguest import REPO

SCRIPT = os.path.join(REPO, 'tools', 'ceph')


@dataclasses.dataclass(frozen=True)
class Ceph:
    conf: str
    pool: str
    user: str
    secret_uuid: str

    @classmethod
    def setup(cls) -> 'Ceph':
        """Install, bootstrap or start it, as needed (idempotent)."""
        info = hostenv.set_up(SCRIPT)
        return cls(conf=info['CONF'], pool=info['POOL'], user=info['USER'],
                   secret_uuid=info['SECRET_UUID'])

    def libvirt_options(self) -> dict[str, str]:
        """nova.conf's [libvirt] for instance disks in this cluster."""
        return {'images_type': 'rbd', 'images_rbd_pool': self.pool,
                'images_rbd_ceph_conf': self.conf, 'rbd_user': self.user,
                'rbd_secret_uuid': self.secret_uuid}

    def _argv(self, *argv: str) -> list[str]:
        return ['rbd', '--conf', self.conf, '--id', self.user, '--pool',
                self.pool, *argv]

    def _rbd(self, *argv: str) -> str:
        return subprocess.run(self._argv(*argv), check=True,
                              capture_output=True, text=True,
                              timeout=60).stdout

    def images(self, uuid: str) -> list[str]:
        """The instance's images in the pool (Nova: ``<uuid>_<disk>``)."""
        return sorted(name for name in json.loads(
            self._rbd('ls', '--format', 'json')) if name.startswith(uuid))

    def size(self, image: str) -> int:
        return int(json.loads(self._rbd('info', '--format', 'json',
                                        image))['size'])

    def snapshots(self, image: str) -> list[str]:
        return sorted(snap['name'] for snap in json.loads(
            self._rbd('snap', 'ls', '--format', 'json', image)))

    def create_snapshot(self, image: str, snap: str) -> None:
        self._rbd('snap', 'create', f'{image}@{snap}')

    def remove_snapshot(self, image: str, snap: str) -> None:
        self._rbd('snap', 'rm', '--no-progress', f'{image}@{snap}')

    def digest(self, image: str) -> str:
        """The SHA-256 of the image's bytes (``rbd export``): whether a
        resize left an image it must not change as it was."""
        return hashlib.sha256(subprocess.run(
            self._argv('export', '--no-progress', image, '-'), check=True,
            capture_output=True, timeout=60).stdout).hexdigest()
