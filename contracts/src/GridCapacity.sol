// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title GridCapacity: the DSO's flexibility registry, meter readings and operating bands
/// @notice Units (see docs/interfaces.md): power W (int), reactive power var (int), voltage
/// micro-pu (1e-6 pu), voltage angle micro-rad (1e-6 rad), time unix seconds. Sign convention:
/// consumption positive, injection negative. An interval id is `t / intervalSeconds` for the
/// interval starting at unix time t.
/// @dev Roles: DEFAULT_ADMIN_ROLE = the DSO (registry, heartbeat, role admin); ORACLE_ROLE writes
/// bands; METER_ROLE is held by every registered meter address. Bands are packed two per storage
/// slot by the device's registration index (see `_encodeBand`) to meet the gas budget.
contract GridCapacity is AccessControl {
    /// @notice Role of the oracle that writes the operating bands.
    bytes32 public constant ORACLE_ROLE = keccak256("ORACLE_ROLE");
    /// @notice Role of a meter address allowed to post readings for its devices.
    bytes32 public constant METER_ROLE = keccak256("METER_ROLE");

    /// @notice Bytes per meter reading in `postReadings`.
    uint256 public constant READING_BYTES = 24;
    /// @notice Bytes per band record in the `BandsWritten` event.
    uint256 public constant BAND_RECORD_BYTES = 20;
    /// @notice Largest |rated power| in W a device may register (2^62 W; keeps band packing exact).
    int64 public constant MAX_ABS_RATED_W = int64(1) << 62;

    /// @notice Kind of a registered device. `Other` also covers plain metering points
    /// (uncontrollable loads) that post readings but get no band.
    enum Kind {
        CommunityBattery,
        ChargingStation,
        Other
    }

    /// @notice A registered device (one storage slot for the fields bands need, then owner and meter).
    struct Device {
        bool registered;
        Kind kind;
        uint32 index;
        uint32 bus;
        int64 pMinRatedW;
        int64 pMaxRatedW;
        address owner;
        address meter;
    }

    /// @notice What the oracle stored for an interval.
    struct IntervalRecord {
        bytes32 inputsHash;
        uint64 updatedAt;
        uint32 bandCount;
    }

    /// @notice Interval length in seconds (shared with the market contract).
    uint64 public immutable intervalSeconds;
    /// @notice Seconds after `updatedAt` during which the latest band counts as fresh.
    uint64 public heartbeatSeconds;
    /// @notice The last interval written by the oracle (valid when `anyIntervalWritten`).
    uint64 public lastInterval;
    /// @notice Whether any interval has been written yet.
    bool public anyIntervalWritten;

    mapping(uint32 deviceId => Device) private _devices;
    uint32[] private _deviceIds;
    mapping(uint64 interval => IntervalRecord) private _intervals;
    /// interval => (device index / 2) => two packed bands (low 128 bits: even index).
    mapping(uint64 interval => mapping(uint256 word => uint256)) private _bandWords;

    /// @notice A device was added to the registry.
    event DeviceRegistered(
        uint32 indexed deviceId,
        uint32 index,
        uint32 bus,
        Kind kind,
        address indexed owner,
        address indexed meter,
        int64 pMinRatedW,
        int64 pMaxRatedW
    );
    /// @notice The rated range of a device changed.
    event RatedRangeSet(uint32 indexed deviceId, int64 pMinRatedW, int64 pMaxRatedW);
    /// @notice The meter of a device changed.
    event DeviceMeterSet(uint32 indexed deviceId, address indexed meter);
    /// @notice The staleness heartbeat changed.
    event HeartbeatSet(uint64 heartbeatSeconds);
    /// @notice A meter posted a batch of readings; `packed` is the exact calldata blob (layout in
    /// `postReadings`).
    event ReadingsPosted(address indexed meter, uint256 count, bytes packed);
    /// @notice The oracle wrote the bands of an interval. `bands` packs one 20-byte record per
    /// band, in the order written, big-endian: uint32 deviceId | int64 pMinW | int64 pMaxW
    /// (`abi.encodePacked(uint32,int64,int64)`).
    event BandsWritten(uint64 indexed interval, bytes32 inputsHash, uint64 updatedAt, bytes bands);

    /// @notice pMinW > pMaxW.
    error InvalidBand(uint32 deviceId, int64 pMinW, int64 pMaxW);
    /// @notice A band leaves the device's rated range.
    error OutsideRatedRange(uint32 deviceId, int64 pMinW, int64 pMaxW);
    /// @notice The interval already has bands.
    error IntervalAlreadyWritten(uint64 interval);
    /// @notice The interval is not greater than the last written one.
    error IntervalNotMonotonic(uint64 interval, uint64 lastInterval);
    /// @notice The device id is not registered.
    error UnknownDevice(uint32 deviceId);
    /// @notice The device id is already registered.
    error DeviceExists(uint32 deviceId);
    /// @notice A rated range with min > max or beyond +-MAX_ABS_RATED_W.
    error InvalidRatedRange(int64 pMinRatedW, int64 pMaxRatedW);
    /// @notice Parallel arrays of different lengths.
    error LengthMismatch();
    /// @notice A batch with nothing in it.
    error EmptyBatch();
    /// @notice A readings blob whose length is not a positive multiple of READING_BYTES.
    error InvalidReadingsLength(uint256 length);
    /// @notice A meter posted a reading for a device that is not registered to it.
    error MeterNotForDevice(uint32 deviceId, address meter);
    /// @notice The same device twice in one band batch.
    error DuplicateDevice(uint32 deviceId);
    /// @notice No band for the device in the interval.
    error NoBand(uint32 deviceId, uint64 interval);
    /// @notice The latest band is older than the heartbeat allows.
    error StaleBand(uint64 interval, uint64 updatedAt, uint64 heartbeatSeconds);
    /// @notice The zero address where an account is required.
    error ZeroAddress();
    /// @notice intervalSeconds or heartbeatSeconds of zero.
    error InvalidSeconds();

    /// @notice Deploy with the DSO as admin.
    /// @param admin the DSO account (DEFAULT_ADMIN_ROLE)
    /// @param intervalSeconds_ interval length in s (> 0)
    /// @param heartbeatSeconds_ staleness limit of `latestBand` in s (> 0)
    constructor(address admin, uint64 intervalSeconds_, uint64 heartbeatSeconds_) {
        if (admin == address(0)) revert ZeroAddress();
        if (intervalSeconds_ == 0 || heartbeatSeconds_ == 0) revert InvalidSeconds();
        intervalSeconds = intervalSeconds_;
        heartbeatSeconds = heartbeatSeconds_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        emit HeartbeatSet(heartbeatSeconds_);
    }

    // ------------------------------------------------------------------ registry (DSO)

    /// @notice Register a device and grant its meter METER_ROLE.
    /// @param deviceId the DSO's id of the device
    /// @param bus the feeder bus the device is connected to
    /// @param kind community battery, charging station or other
    /// @param owner the device's owner
    /// @param meter the meter address that posts its readings
    /// @param pMinRatedW lowest rated power in W (injection negative)
    /// @param pMaxRatedW highest rated power in W
    function registerDevice(
        uint32 deviceId,
        uint32 bus,
        Kind kind,
        address owner,
        address meter,
        int64 pMinRatedW,
        int64 pMaxRatedW
    ) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (_devices[deviceId].registered) revert DeviceExists(deviceId);
        if (owner == address(0) || meter == address(0)) revert ZeroAddress();
        _checkRatedRange(pMinRatedW, pMaxRatedW);
        uint32 index = uint32(_deviceIds.length);
        _devices[deviceId] = Device({
            registered: true,
            kind: kind,
            index: index,
            bus: bus,
            pMinRatedW: pMinRatedW,
            pMaxRatedW: pMaxRatedW,
            owner: owner,
            meter: meter
        });
        _deviceIds.push(deviceId);
        _grantRole(METER_ROLE, meter);
        emit DeviceRegistered(deviceId, index, bus, kind, owner, meter, pMinRatedW, pMaxRatedW);
    }

    /// @notice Change a device's rated range (bands already written stay as they are).
    /// @param deviceId a registered device
    /// @param pMinRatedW lowest rated power in W
    /// @param pMaxRatedW highest rated power in W
    function setRatedRange(uint32 deviceId, int64 pMinRatedW, int64 pMaxRatedW)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        Device storage d = _registered(deviceId);
        _checkRatedRange(pMinRatedW, pMaxRatedW);
        d.pMinRatedW = pMinRatedW;
        d.pMaxRatedW = pMaxRatedW;
        emit RatedRangeSet(deviceId, pMinRatedW, pMaxRatedW);
    }

    /// @notice Move a device to another meter address and grant that address METER_ROLE. The old
    /// meter keeps its role (it may serve other devices); revoke it with `revokeRole` if not.
    /// @param deviceId a registered device
    /// @param meter the new meter address
    function setDeviceMeter(uint32 deviceId, address meter) external onlyRole(DEFAULT_ADMIN_ROLE) {
        Device storage d = _registered(deviceId);
        if (meter == address(0)) revert ZeroAddress();
        d.meter = meter;
        _grantRole(METER_ROLE, meter);
        emit DeviceMeterSet(deviceId, meter);
    }

    /// @notice Set the staleness heartbeat of `latestBand`.
    /// @param heartbeatSeconds_ seconds (> 0)
    function setHeartbeat(uint64 heartbeatSeconds_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (heartbeatSeconds_ == 0) revert InvalidSeconds();
        heartbeatSeconds = heartbeatSeconds_;
        emit HeartbeatSet(heartbeatSeconds_);
    }

    // ------------------------------------------------------------------ readings (meters)

    /// @notice Post a batch of readings as one event, with no storage per reading.
    /// @dev `packed` is a concatenation of 24-byte records, every field big-endian
    /// (`abi.encodePacked(uint32,uint32,int32,int32,uint32,int32)` per reading):
    ///   bytes  0..3   uint32 deviceId
    ///   bytes  4..7   uint32 timestamp, unix s (not checked against the block time)
    ///   bytes  8..11  int32  P in W (consumption positive)
    ///   bytes 12..15  int32  Q in var
    ///   bytes 16..19  uint32 V in micro-pu
    ///   bytes 20..23  int32  voltage angle in micro-rad
    /// Every deviceId must be registered with msg.sender as its meter.
    /// @param packed the readings
    function postReadings(bytes calldata packed) external onlyRole(METER_ROLE) {
        uint256 length = packed.length;
        if (length == 0 || length % READING_BYTES != 0) revert InvalidReadingsLength(length);
        uint256 checkedDevice = type(uint256).max; // no device checked yet
        for (uint256 offset = 0; offset < length; offset += READING_BYTES) {
            uint256 deviceId;
            assembly ("memory-safe") {
                deviceId := shr(224, calldataload(add(packed.offset, offset)))
            }
            if (deviceId != checkedDevice) {
                if (_devices[uint32(deviceId)].meter != msg.sender) {
                    revert MeterNotForDevice(uint32(deviceId), msg.sender);
                }
                checkedDevice = deviceId;
            }
        }
        emit ReadingsPosted(msg.sender, length / READING_BYTES, packed);
    }

    // ------------------------------------------------------------------ bands (oracle)

    /// @notice Write the operating bands of one interval, once, in increasing interval order.
    /// @param interval the interval id; strictly greater than the last written one
    /// @param inputsHash hash of the inputs the oracle used (readings, feeder, parameters)
    /// @param deviceIds registered devices
    /// @param pMinW lower band limit per device in W
    /// @param pMaxW upper band limit per device in W
    function writeBands(
        uint64 interval,
        bytes32 inputsHash,
        uint32[] calldata deviceIds,
        int64[] calldata pMinW,
        int64[] calldata pMaxW
    ) external onlyRole(ORACLE_ROLE) {
        uint256 n = deviceIds.length;
        if (n == 0) revert EmptyBatch();
        if (pMinW.length != n || pMaxW.length != n) revert LengthMismatch();
        IntervalRecord storage rec = _intervals[interval];
        if (rec.updatedAt != 0) revert IntervalAlreadyWritten(interval);
        if (anyIntervalWritten && interval <= lastInterval) {
            revert IntervalNotMonotonic(interval, lastInterval);
        }
        mapping(uint256 => uint256) storage words = _bandWords[interval];
        bytes memory packed = new bytes(n * BAND_RECORD_BYTES);
        for (uint256 i = 0; i < n; ++i) {
            uint32 deviceId = deviceIds[i];
            int64 lo = pMinW[i];
            int64 hi = pMaxW[i];
            Device storage d = _devices[deviceId];
            if (!d.registered) revert UnknownDevice(deviceId);
            if (lo > hi) revert InvalidBand(deviceId, lo, hi);
            if (lo < d.pMinRatedW || hi > d.pMaxRatedW) revert OutsideRatedRange(deviceId, lo, hi);
            uint256 index = d.index;
            uint256 shift = (index & 1) * 128;
            uint256 word = words[index >> 1];
            if ((word >> shift) & type(uint128).max != 0) revert DuplicateDevice(deviceId);
            words[index >> 1] = word | (_encodeBand(lo, hi) << shift);
            // record i: deviceId (4 bytes) | pMinW (8) | pMaxW (8); written as one left-aligned word
            uint256 record = (uint256(deviceId) << 224) | (uint256(uint64(lo)) << 160)
                | (uint256(uint64(hi)) << 96);
            assembly ("memory-safe") {
                mstore(add(add(packed, 32), mul(i, 20)), record)
            }
        }
        uint64 nowSeconds = uint64(block.timestamp);
        rec.inputsHash = inputsHash;
        rec.updatedAt = nowSeconds;
        rec.bandCount = uint32(n);
        lastInterval = interval;
        anyIntervalWritten = true;
        emit BandsWritten(interval, inputsHash, nowSeconds, packed);
    }

    // ------------------------------------------------------------------ views

    /// @notice The band of a device in an interval; reverts NoBand if none was written.
    /// @param deviceId a registered device
    /// @param interval an interval id
    /// @return pMinW lower limit in W
    /// @return pMaxW upper limit in W
    /// @return updatedAt block timestamp of the write
    function bandOf(uint32 deviceId, uint64 interval)
        public
        view
        returns (int64 pMinW, int64 pMaxW, uint64 updatedAt)
    {
        Device storage d = _registered(deviceId);
        uint256 index = d.index;
        uint256 half = (_bandWords[interval][index >> 1] >> ((index & 1) * 128)) & type(uint128).max;
        if (half == 0) revert NoBand(deviceId, interval);
        (pMinW, pMaxW) = _decodeBand(half);
        updatedAt = _intervals[interval].updatedAt;
    }

    /// @notice Whether a device has a band in an interval.
    /// @param deviceId a registered device
    /// @param interval an interval id
    /// @return true if a band was written
    function hasBand(uint32 deviceId, uint64 interval) external view returns (bool) {
        Device storage d = _registered(deviceId);
        uint256 index = d.index;
        return (_bandWords[interval][index >> 1] >> ((index & 1) * 128)) & type(uint128).max != 0;
    }

    /// @notice The device's band in the last written interval, if written within the heartbeat.
    /// @dev Reverts NoBand when the last interval has no band for the device and StaleBand when
    /// `block.timestamp > updatedAt + heartbeatSeconds`.
    /// @param deviceId a registered device
    /// @return interval the last written interval
    /// @return pMinW lower limit in W
    /// @return pMaxW upper limit in W
    /// @return updatedAt block timestamp of the write
    function latestBand(uint32 deviceId)
        external
        view
        returns (uint64 interval, int64 pMinW, int64 pMaxW, uint64 updatedAt)
    {
        if (!anyIntervalWritten) revert NoBand(deviceId, 0);
        interval = lastInterval;
        (pMinW, pMaxW, updatedAt) = bandOf(deviceId, interval);
        if (block.timestamp > uint256(updatedAt) + heartbeatSeconds) {
            revert StaleBand(interval, updatedAt, heartbeatSeconds);
        }
    }

    /// @notice Whether `powerW` lies inside the device's band of the interval (bounds included).
    /// @param deviceId a registered device
    /// @param interval an interval with a band for the device (else reverts NoBand)
    /// @param powerW power in W
    /// @return inside pMinW <= powerW <= pMaxW
    function isInside(uint32 deviceId, uint64 interval, int64 powerW) external view returns (bool inside) {
        (int64 lo, int64 hi,) = bandOf(deviceId, interval);
        return lo <= powerW && powerW <= hi;
    }

    /// @notice The oracle's record of an interval (updatedAt 0 = not written).
    /// @param interval an interval id
    /// @return inputsHash hash of the oracle's inputs
    /// @return updatedAt block timestamp of the write
    /// @return bandCount number of bands written
    function intervalRecord(uint64 interval)
        external
        view
        returns (bytes32 inputsHash, uint64 updatedAt, uint32 bandCount)
    {
        IntervalRecord storage rec = _intervals[interval];
        return (rec.inputsHash, rec.updatedAt, rec.bandCount);
    }

    /// @notice A registered device; reverts UnknownDevice otherwise.
    /// @param deviceId the device id
    /// @return the device record
    function deviceOf(uint32 deviceId) external view returns (Device memory) {
        return _registered(deviceId);
    }

    /// @notice Whether a device id is registered.
    /// @param deviceId the device id
    /// @return true if registered
    function isRegistered(uint32 deviceId) external view returns (bool) {
        return _devices[deviceId].registered;
    }

    /// @notice Number of registered devices.
    /// @return count
    function deviceCount() external view returns (uint256) {
        return _deviceIds.length;
    }

    /// @notice The id of the device with registration index `index`.
    /// @param index 0 .. deviceCount()-1
    /// @return the device id
    function deviceIdAt(uint256 index) external view returns (uint32) {
        return _deviceIds[index];
    }

    /// @notice The interval id containing a unix time.
    /// @param timestamp unix seconds
    /// @return timestamp / intervalSeconds
    function intervalAt(uint256 timestamp) external view returns (uint64) {
        return uint64(timestamp / intervalSeconds);
    }

    // ------------------------------------------------------------------ internals

    function _registered(uint32 deviceId) private view returns (Device storage d) {
        d = _devices[deviceId];
        if (!d.registered) revert UnknownDevice(deviceId);
    }

    function _checkRatedRange(int64 lo, int64 hi) private pure {
        if (lo > hi || lo < -MAX_ABS_RATED_W || hi > MAX_ABS_RATED_W) revert InvalidRatedRange(lo, hi);
    }

    /// A band in 128 bits: high 64 = uint64(pMinW), low 64 = pMaxW - pMinW + 1 (>= 1, so a written
    /// band is never 0). Exact because |rated| <= 2^62.
    function _encodeBand(int64 lo, int64 hi) private pure returns (uint256) {
        uint256 width = uint256(int256(hi) - int256(lo)) + 1;
        return (uint256(uint64(lo)) << 64) | width;
    }

    function _decodeBand(uint256 half) private pure returns (int64 lo, int64 hi) {
        lo = int64(uint64(half >> 64));
        hi = int64(int256(lo) + int256(half & type(uint64).max) - 1);
    }
}
