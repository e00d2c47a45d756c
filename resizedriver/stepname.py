"""The names of plan steps, one constant each.

They are what journals record and what an integration (the Nova adapter)
names when it replaces a step with its own implementation, so a typo is
an ``AttributeError`` at import, not a step silently left as it was.  The
values are written into journals: changing one breaks the recovery of
journals written by an older version.
"""

# migrate_disk_and_power_off
COPY_BACKING = 'copy backing files'
WRITE_RECORD = 'write resize record'
POWER_OFF = 'power off'
UNPLUG_VIFS = 'unplug VIFs'
DISCONNECT_VOLUMES = 'disconnect volumes'
CREATE_DEST_DIR = 'create destination dir'
MOVE_TO_RESIZE = 'move instance dir to _resize'
CREATE_INSTANCE_DIR = 'create instance dir'
COPY_DISKS = 'copy disks'
STAGE_OVERLAYS = 'stage overlays'
PUT_STAGED_IN_PLACE = 'put staged dir in place'
TAKE_REVERT_POINT = 'take revert point'
STAGE_BOOT_FILES = 'stage boot files'
SNAPSHOT_FOR_PRECOPY = 'snapshot disks for pre-copy'
PRECOPY_DISKS = 'pre-copy disks'
COPY_TOPS = 'copy what changed'

# finish_migration
CHECK_COPIES = 'check copied disks'
REBASE = 'rebase overlays'
CONVERT = 'convert disk formats'
EXTEND = 'extend disks'
CREATE_SWAP = 'create swap'
WRITE_DISK_INFO = 'write disk.info'
CREATE_MISSING_IMAGES = 'create missing images'
PLUG_VIFS = 'plug VIFs'
DEFINE = 'define domain'
START = 'start guest'
CHECK_STAGED = 'check staged overlays'
FOLD_CHAINS = 'fold backing chains'
CHECK_LIVE = 'check live guest'
DEFINE_NEW_FLAVOR = 'define new flavor'
GROW_MEMORY = 'grow memory'
GROW_DISKS = 'grow disks'
ADD_VCPUS = 'add vCPUs'
CHECK_REVERT_POINT = 'check revert point'
CHECK_PRECOPIED = 'check pre-copied disks'
FOLD_PRECOPY = 'fold pre-copied layers'

# confirm_migration
CHECK_VERIFIED = 'check copies were verified'
MARK_RESIZE_DIR_IN_USE = 'mark _resize as read by the guest'
UNDEFINE_SOURCE = 'undefine source domain'
REMOVE_REVERT_POINT = 'remove revert point'
DELETE_RESIZE_DIR = 'delete _resize'

# finish_revert_migration
DROP_DEST_GUEST = 'drop destination guest'
STOP_RESIZED = 'stop resized guest'
DROP_DEST_COPY = 'drop destination copy'
MOVE_BACK = 'move _resize back'
DEFINE_SOURCE = 'define source domain'
DEFINE_AND_START = 'define and start guest'
REMOVE_RECORD = 'remove resize record'
SHUT_DOWN_RESIZED = 'shut down resized guest'
SHRINK_MEMORY = 'shrink memory'
REMOVE_VCPUS = 'remove vCPUs'
ROLL_BACK_TO_REVERT_POINT = 'roll back to revert point'
FOLD_TOPS_BACK = 'fold snapshot tops back'

# drop_destination_guest
DROP_GUEST = 'destroy and undefine guest'
