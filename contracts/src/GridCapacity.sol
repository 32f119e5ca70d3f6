// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";

/// @title GridCapacity: the DSO's device registry, meter readings, operating bands and the
/// oracle's per-interval meter totals
/// @notice Units (see docs/interfaces.md): power W (int), reactive power var (int), voltage
/// micro-pu (1e-6 pu), voltage angle micro-rad (1e-6 rad), energy Wh (int64, consumption
/// positive), time unix seconds. Sign convention: consumption positive, injection negative. An
/// interval id is `t / intervalSeconds` for the interval starting at unix time t.
/// @dev Roles: DEFAULT_ADMIN_ROLE = the DSO (registry, heartbeat, role admin; handed over in two
/// steps with a delay, OpenZeppelin AccessControlDefaultAdminRules); ORACLE_ROLE writes bands and
/// meter totals; METER_ROLE is held by every registered meter address. No account may hold two of
/// the three roles (`RoleConflict`). Bands are stored densely: per interval a bitmap over the
/// devices' registration indices says which devices have a band, and the bands themselves fill
/// the slots four by four in registration-index order (see `_bandSlots`).
contract GridCapacity is AccessControlDefaultAdminRules {
    /// @notice Role of the oracle that writes the operating bands and the meter totals.
    bytes32 public constant ORACLE_ROLE = keccak256("ORACLE_ROLE");
    /// @notice Role of a meter address allowed to post readings and declare vehicle sessions.
    bytes32 public constant METER_ROLE = keccak256("METER_ROLE");

    /// @notice Bytes per meter reading in `postReadings`.
    uint256 public constant READING_BYTES = 24;
    /// @notice Bytes per record of `declareSessions`.
    uint256 public constant SESSION_BYTES = 16;
    /// @notice Bytes per band record in the `BandsWritten` event.
    uint256 public constant BAND_RECORD_BYTES = 20;
    /// @notice Bytes per record of `writeMeterTotals`.
    uint256 public constant TOTAL_RECORD_BYTES = 12;
    /// @notice Largest |rated power| in W a device may register: the int32 range of a reading's P
    /// (2,147,483,647 W), which lets four bands share a storage slot.
    int64 public constant MAX_ABS_RATED_W = type(int32).max;

    /// @notice Kind of a registered device. `Other` also covers plain metering points
    /// (uncontrollable loads, a member's connection meter) that post readings but get no band.
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

    /// @notice What the oracle stored for an interval (`reserveWh` valid when `hasReserve`).
    struct IntervalRecord {
        bytes32 inputsHash;
        uint64 updatedAt;
        uint32 bandCount;
        uint64 reserveWh;
        bool hasReserve;
    }

    /// @notice Interval length in seconds (shared with the market contract).
    uint64 public immutable intervalSeconds;
    /// @notice How many intervals after the current one bands (and the market's orders) may be
    /// written for; earlier intervals than the current one are refused.
    uint64 public immutable maxIntervalsAhead;
    /// @notice Seconds after `updatedAt` during which a band counts as fresh (`latestBand`).
    uint64 public heartbeatSeconds;
    /// @notice The highest interval written by the oracle (valid when `anyIntervalWritten`).
    uint64 public lastInterval;
    /// @notice Whether any interval has been written yet.
    bool public anyIntervalWritten;

    mapping(uint32 deviceId => Device) private _devices;
    uint32[] private _deviceIds;
    mapping(uint64 interval => IntervalRecord) private _intervals;
    /// interval => word => bit i set when the device with registration index 256 * word + i has
    /// a band in the interval.
    mapping(uint64 interval => mapping(uint256 word => uint256)) private _bandBits;
    /// interval => slot => four bands, in registration-index order of the banded devices (rank r
    /// in slot r / 4, bits 64 * (r % 4) and up); a band is uint32(pMinW) << 32 | uint32(pMaxW)
    /// (exact: rated ranges lie inside int32).
    mapping(uint64 interval => mapping(uint256 slot => uint256)) private _bandSlots;
    /// interval => keccak256 of the meter totals written by the oracle (0 = none written).
    mapping(uint64 interval => bytes32) private _meterTotalsHash;

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
    /// @notice A meter declared a batch of vehicle sessions; `packed` is the exact calldata blob
    /// (layout in `declareSessions`).
    event SessionsDeclared(address indexed meter, uint256 count, bytes packed);
    /// @notice The oracle wrote the bands of an interval. `bands` packs one 20-byte record per
    /// band, in the order written, big-endian: uint32 deviceId | int64 pMinW | int64 pMaxW
    /// (`abi.encodePacked(uint32,int64,int64)`).
    event BandsWritten(uint64 indexed interval, bytes32 inputsHash, uint64 updatedAt, bytes bands);
    /// @notice The oracle's community-battery reserve for an interval, written with its bands.
    event ReserveWritten(uint64 indexed interval, uint64 reserveWh);
    /// @notice The oracle wrote the meter totals of an interval (layout in `writeMeterTotals`).
    event MeterTotalsWritten(uint64 indexed interval, bytes32 totalsHash, bytes totals);

    /// @notice pMinW > pMaxW.
    error InvalidBand(uint32 deviceId, int64 pMinW, int64 pMaxW);
    /// @notice A band leaves the device's rated range.
    error OutsideRatedRange(uint32 deviceId, int64 pMinW, int64 pMaxW);
    /// @notice The interval already has bands.
    error IntervalAlreadyWritten(uint64 interval);
    /// @notice The interval lies before the current one (`currentInterval`).
    error IntervalInPast(uint64 interval, uint64 currentInterval);
    /// @notice The interval lies more than `maxIntervalsAhead` after the current one.
    error IntervalTooFarAhead(uint64 interval, uint64 lastAllowed);
    /// @notice The interval has not ended yet (meter totals are written after it).
    error IntervalNotOver(uint64 interval, uint64 currentInterval);
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
    /// @notice A sessions blob whose length is not a positive multiple of SESSION_BYTES.
    error InvalidSessionsLength(uint256 length);
    /// @notice The same device twice in one band batch.
    error DuplicateDevice(uint32 deviceId);
    /// @notice A band batch not in ascending registration-index order.
    error DevicesNotAscending(uint32 deviceId);
    /// @notice No band for the device in the interval.
    error NoBand(uint32 deviceId, uint64 interval);
    /// @notice The band is older than the heartbeat allows.
    error StaleBand(uint64 interval, uint64 updatedAt, uint64 heartbeatSeconds);
    /// @notice The zero address where an account is required.
    error ZeroAddress();
    /// @notice intervalSeconds or heartbeatSeconds of zero.
    error InvalidSeconds();
    /// @notice The account already holds a role that excludes the requested one.
    error RoleConflict(address account, bytes32 heldRole, bytes32 requestedRole);
    /// @notice A meter-totals blob whose length is not a multiple of TOTAL_RECORD_BYTES.
    error InvalidTotalsLength(uint256 length);
    /// @notice Meter totals not in strictly ascending device id order.
    error TotalsNotAscending(uint32 deviceId);
    /// @notice The interval's meter totals are already written.
    error MeterTotalsAlreadyWritten(uint64 interval);

    /// @notice Deploy with the DSO as admin.
    /// @param admin the DSO account (DEFAULT_ADMIN_ROLE)
    /// @param adminDelaySeconds delay of a DEFAULT_ADMIN_ROLE hand-over or renouncement, s
    /// @param intervalSeconds_ interval length in s (> 0)
    /// @param heartbeatSeconds_ staleness limit of `latestBand` in s (> 0)
    /// @param maxIntervalsAhead_ intervals after the current one that bands and orders may target
    constructor(
        address admin,
        uint48 adminDelaySeconds,
        uint64 intervalSeconds_,
        uint64 heartbeatSeconds_,
        uint64 maxIntervalsAhead_
    ) AccessControlDefaultAdminRules(adminDelaySeconds, admin) {
        if (intervalSeconds_ == 0 || heartbeatSeconds_ == 0) revert InvalidSeconds();
        intervalSeconds = intervalSeconds_;
        maxIntervalsAhead = maxIntervalsAhead_;
        heartbeatSeconds = heartbeatSeconds_;
        emit HeartbeatSet(heartbeatSeconds_);
    }

    // ------------------------------------------------------------------ registry (DSO)

    /// @notice Register a device and grant its meter METER_ROLE.
    /// @param deviceId the DSO's id of the device
    /// @param bus the feeder bus the device is connected to
    /// @param kind community battery, charging station or other
    /// @param deviceOwner the device's owner
    /// @param meter the meter address that posts its readings
    /// @param pMinRatedW lowest rated power in W (injection negative)
    /// @param pMaxRatedW highest rated power in W
    function registerDevice(
        uint32 deviceId,
        uint32 bus,
        Kind kind,
        address deviceOwner,
        address meter,
        int64 pMinRatedW,
        int64 pMaxRatedW
    ) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (_devices[deviceId].registered) revert DeviceExists(deviceId);
        if (deviceOwner == address(0) || meter == address(0)) revert ZeroAddress();
        _checkRatedRange(pMinRatedW, pMaxRatedW);
        uint32 index = uint32(_deviceIds.length);
        _devices[deviceId] = Device({
            registered: true,
            kind: kind,
            index: index,
            bus: bus,
            pMinRatedW: pMinRatedW,
            pMaxRatedW: pMaxRatedW,
            owner: deviceOwner,
            meter: meter
        });
        _deviceIds.push(deviceId);
        _grantRole(METER_ROLE, meter);
        emit DeviceRegistered(deviceId, index, bus, kind, deviceOwner, meter, pMinRatedW, pMaxRatedW);
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
    /// The sender must hold METER_ROLE. Which devices it may speak for is checked by every
    /// consumer, not here: a reading counts only when the event's `meter` is the device's meter
    /// in the registry (docs/contracts.md, "Readings": a storage read per device would cost
    /// 2,100 gas per distinct device and break the 1,500 gas per reading budget).
    /// @param packed the readings
    function postReadings(bytes calldata packed) external onlyRole(METER_ROLE) {
        uint256 length = packed.length;
        if (length == 0 || length % READING_BYTES != 0) revert InvalidReadingsLength(length);
        emit ReadingsPosted(msg.sender, length / READING_BYTES, packed);
    }

    /// @notice Declare a batch of vehicle sessions (a vehicle plugged into a charging station) as
    /// one event, with no storage per session.
    /// @dev `packed` is a concatenation of 16-byte records, every field big-endian
    /// (`abi.encodePacked(uint32,uint32,uint32,uint32)` per session):
    ///   bytes  0..3   uint32 deviceId
    ///   bytes  4..7   uint32 arriveAt, unix s (the vehicle connected)
    ///   bytes  8..11  uint32 departAt, unix s (the vehicle will leave)
    ///   bytes 12..15  uint32 energy the vehicle asks for in Wh
    /// The sender must hold METER_ROLE; the contract checks nothing else. Every consumer (the
    /// oracle) counts a record only when the event's `meter` is the device's meter in the
    /// registry, the device is a ChargingStation, arriveAt < departAt, the session lasts at most
    /// 7 days and the times lie near the block time (docs/oracle.md, "Vehicle sessions").
    /// @param packed the sessions
    function declareSessions(bytes calldata packed) external onlyRole(METER_ROLE) {
        uint256 length = packed.length;
        if (length == 0 || length % SESSION_BYTES != 0) revert InvalidSessionsLength(length);
        emit SessionsDeclared(msg.sender, length / SESSION_BYTES, packed);
    }

    // ------------------------------------------------------------------ bands (oracle)

    /// @notice Write the operating bands of one interval, once.
    /// @dev The interval must lie in [currentInterval, currentInterval + maxIntervalsAhead], so
    /// no write can block another interval. Devices must come in strictly ascending registration
    /// index (the order of `deviceIdAt`); each band inside the device's rated range.
    /// @param interval the interval id
    /// @param inputsHash hash of the inputs the oracle used (readings, feeder, parameters)
    /// @param deviceIds registered devices, ascending registration index
    /// @param pMinW lower band limit per device in W
    /// @param pMaxW upper band limit per device in W
    function writeBands(
        uint64 interval,
        bytes32 inputsHash,
        uint32[] calldata deviceIds,
        int64[] calldata pMinW,
        int64[] calldata pMaxW
    ) external onlyRole(ORACLE_ROLE) {
        _writeBands(interval, inputsHash, deviceIds, pMinW, pMaxW);
    }

    /// @notice `writeBands` plus the community battery's reserve for the interval: the state of
    /// charge in Wh the market must keep in the battery at the interval's end (it discharges no
    /// further for its members unless the battery's band forces it), what the grid's needed
    /// discharge of the next hours takes. Written once, with the bands.
    /// @param reserveWh the reserve in Wh (DC side, as the market's state of charge)
    function writeBandsWithReserve(
        uint64 interval,
        bytes32 inputsHash,
        uint32[] calldata deviceIds,
        int64[] calldata pMinW,
        int64[] calldata pMaxW,
        uint64 reserveWh
    ) external onlyRole(ORACLE_ROLE) {
        IntervalRecord storage rec = _writeBands(interval, inputsHash, deviceIds, pMinW, pMaxW);
        rec.reserveWh = reserveWh;
        rec.hasReserve = true;
        emit ReserveWritten(interval, reserveWh);
    }

    /// Check and store an interval's bands (see `writeBands`); returns its record.
    function _writeBands(
        uint64 interval,
        bytes32 inputsHash,
        uint32[] calldata deviceIds,
        int64[] calldata pMinW,
        int64[] calldata pMaxW
    ) private returns (IntervalRecord storage rec) {
        uint256 n = deviceIds.length;
        if (n == 0) revert EmptyBatch();
        if (pMinW.length != n || pMaxW.length != n) revert LengthMismatch();
        _checkWindow(interval);
        rec = _intervals[interval];
        if (rec.updatedAt != 0) revert IntervalAlreadyWritten(interval);
        bytes memory packed = _storeBands(interval, deviceIds, pMinW, pMaxW);
        uint64 nowSeconds = uint64(block.timestamp);
        rec.inputsHash = inputsHash;
        rec.updatedAt = nowSeconds;
        rec.bandCount = uint32(n);
        if (!anyIntervalWritten || interval > lastInterval) {
            lastInterval = interval;
            anyIntervalWritten = true;
        }
        emit BandsWritten(interval, inputsHash, nowSeconds, packed);
    }

    // ------------------------------------------------------------------ meter totals (oracle)

    /// @notice Write each device's metered energy of an interval that has ended, once.
    /// @dev `totals` is a concatenation of 12-byte big-endian records
    /// (`abi.encodePacked(uint32 deviceId, int64 energyWh)`), device ids strictly ascending and
    /// registered. Only the hash is stored; the market checks totals given to it against it.
    /// How the oracle integrates readings into energy is docs/contracts.md "Meter totals"; a
    /// replay from the `ReadingsPosted` events checks it.
    /// @param interval an interval before the current one
    /// @param totals the records (may be empty: no device had readings)
    function writeMeterTotals(uint64 interval, bytes calldata totals) external onlyRole(ORACLE_ROLE) {
        uint64 current = currentInterval();
        if (interval >= current) revert IntervalNotOver(interval, current);
        if (_meterTotalsHash[interval] != 0) revert MeterTotalsAlreadyWritten(interval);
        uint256 length = totals.length;
        if (length % TOTAL_RECORD_BYTES != 0) revert InvalidTotalsLength(length);
        uint256 previous = 0;
        for (uint256 offset = 0; offset < length; offset += TOTAL_RECORD_BYTES) {
            uint256 deviceId;
            assembly ("memory-safe") {
                deviceId := shr(224, calldataload(add(totals.offset, offset)))
            }
            if (offset != 0 && deviceId <= previous) revert TotalsNotAscending(uint32(deviceId));
            if (!_devices[uint32(deviceId)].registered) revert UnknownDevice(uint32(deviceId));
            previous = deviceId;
        }
        bytes32 h = keccak256(totals);
        _meterTotalsHash[interval] = h;
        emit MeterTotalsWritten(interval, h, totals);
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
        uint256 index = _registered(deviceId).index;
        mapping(uint256 => uint256) storage bits = _bandBits[interval];
        uint256 word = bits[index >> 8];
        uint256 bit = index & 255;
        if ((word >> bit) & 1 == 0) revert NoBand(deviceId, interval);
        uint256 rank = _popcount(word & ((uint256(1) << bit) - 1));
        for (uint256 w = 0; w < index >> 8; ++w) {
            rank += _popcount(bits[w]);
        }
        uint256 band = _bandSlots[interval][rank >> 2] >> ((rank & 3) * 64);
        pMinW = int32(uint32(band >> 32));
        pMaxW = int32(uint32(band));
        updatedAt = _intervals[interval].updatedAt;
    }

    /// @notice Whether a device has a band in an interval.
    /// @param deviceId a registered device
    /// @param interval an interval id
    /// @return true if a band was written
    function hasBand(uint32 deviceId, uint64 interval) external view returns (bool) {
        uint256 index = _registered(deviceId).index;
        return (_bandBits[interval][index >> 8] >> (index & 255)) & 1 == 1;
    }

    /// @notice The device's band in the current interval, if written within the heartbeat.
    /// @dev Reverts NoBand when the current interval has no band for the device and StaleBand
    /// when `block.timestamp > updatedAt + heartbeatSeconds`.
    /// @param deviceId a registered device
    /// @return interval the current interval
    /// @return pMinW lower limit in W
    /// @return pMaxW upper limit in W
    /// @return updatedAt block timestamp of the write
    function latestBand(uint32 deviceId)
        external
        view
        returns (uint64 interval, int64 pMinW, int64 pMaxW, uint64 updatedAt)
    {
        interval = currentInterval();
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

    /// @notice The community battery's reserve the oracle wrote with the interval's bands.
    /// @param interval an interval id
    /// @return written whether one was written (`writeBandsWithReserve`)
    /// @return reserveWh the reserve in Wh (0 when none)
    function reserveOf(uint64 interval) external view returns (bool written, uint64 reserveWh) {
        IntervalRecord storage rec = _intervals[interval];
        return (rec.hasReserve, rec.reserveWh);
    }

    /// @notice keccak256 of the interval's meter totals (0: not written).
    /// @param interval an interval id
    /// @return the hash
    function meterTotalsHash(uint64 interval) external view returns (bytes32) {
        return _meterTotalsHash[interval];
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
    function intervalAt(uint256 timestamp) public view returns (uint64) {
        return uint64(timestamp / intervalSeconds);
    }

    /// @notice The interval containing the current block's timestamp.
    /// @return block.timestamp / intervalSeconds
    function currentInterval() public view returns (uint64) {
        return intervalAt(block.timestamp);
    }

    // ------------------------------------------------------------------ internals

    /// Separation of duties: no account holds two of DEFAULT_ADMIN_ROLE, ORACLE_ROLE and METER_ROLE.
    function _grantRole(bytes32 role, address account) internal override returns (bool) {
        _checkConflict(role, account, DEFAULT_ADMIN_ROLE);
        _checkConflict(role, account, ORACLE_ROLE);
        _checkConflict(role, account, METER_ROLE);
        return super._grantRole(role, account);
    }

    function _checkConflict(bytes32 requested, address account, bytes32 exclusive) private view {
        if (requested != exclusive && hasRole(exclusive, account)) {
            revert RoleConflict(account, exclusive, requested);
        }
    }

    /// Refuse an interval before the current one or more than maxIntervalsAhead after it.
    function _checkWindow(uint64 interval) private view {
        uint64 current = currentInterval();
        if (interval < current) revert IntervalInPast(interval, current);
        uint64 lastAllowed = current + maxIntervalsAhead;
        if (interval > lastAllowed) revert IntervalTooFarAhead(interval, lastAllowed);
    }

    /// Validate and store the bands (see `_bandBits`, `_bandSlots`); returns the event records.
    function _storeBands(
        uint64 interval,
        uint32[] calldata deviceIds,
        int64[] calldata pMinW,
        int64[] calldata pMaxW
    ) private returns (bytes memory packed) {
        packed = _markBands(interval, deviceIds, pMinW, pMaxW);
        mapping(uint256 => uint256) storage slots = _bandSlots[interval];
        uint256 n = deviceIds.length;
        for (uint256 i = 0; i < n; i += 4) {
            uint256 word = 0;
            for (uint256 lane = 0; lane < 4 && i + lane < n; ++lane) {
                word |= _encodeBand(pMinW[i + lane], pMaxW[i + lane]) << (64 * lane);
            }
            slots[i >> 2] = word;
        }
    }

    /// Check every band and the ascending registration-index order, set the interval's band
    /// bits; returns the event's 20-byte records.
    function _markBands(
        uint64 interval,
        uint32[] calldata deviceIds,
        int64[] calldata pMinW,
        int64[] calldata pMaxW
    ) private returns (bytes memory packed) {
        packed = new bytes(deviceIds.length * BAND_RECORD_BYTES);
        uint256 bitWord = 0; // bits of word `wordIndex`, stored when the word changes
        uint256 wordIndex = 0;
        uint256 previous = 0;
        for (uint256 i = 0; i < deviceIds.length; ++i) {
            uint256 index = _checkedBand(deviceIds[i], pMinW[i], pMaxW[i]);
            if (i != 0 && index <= previous) {
                if (index == previous) revert DuplicateDevice(deviceIds[i]);
                revert DevicesNotAscending(deviceIds[i]);
            }
            previous = index;
            if (index >> 8 != wordIndex) {
                if (bitWord != 0) _bandBits[interval][wordIndex] = bitWord;
                (bitWord, wordIndex) = (0, index >> 8);
            }
            bitWord |= uint256(1) << (index & 255);
            // record i: deviceId (4 bytes) | pMinW (8) | pMaxW (8); written as one left-aligned word
            uint256 record = (uint256(deviceIds[i]) << 224) | (uint256(uint64(pMinW[i])) << 160)
                | (uint256(uint64(pMaxW[i])) << 96);
            assembly ("memory-safe") {
                mstore(add(add(packed, 32), mul(i, 20)), record)
            }
        }
        _bandBits[interval][wordIndex] = bitWord;
    }

    /// A band in 64 bits: uint32(pMinW) << 32 | uint32(pMaxW) (both inside int32: checked
    /// against the rated range before).
    function _encodeBand(int64 lo, int64 hi) private pure returns (uint256) {
        return (uint256(uint32(int32(lo))) << 32) | uint256(uint32(int32(hi)));
    }

    /// Check one band against the registry; returns the device's registration index.
    function _checkedBand(uint32 deviceId, int64 lo, int64 hi) private view returns (uint256) {
        Device storage d = _devices[deviceId];
        if (!d.registered) revert UnknownDevice(deviceId);
        if (lo > hi) revert InvalidBand(deviceId, lo, hi);
        if (lo < d.pMinRatedW || hi > d.pMaxRatedW) revert OutsideRatedRange(deviceId, lo, hi);
        return d.index;
    }

    function _registered(uint32 deviceId) private view returns (Device storage d) {
        d = _devices[deviceId];
        if (!d.registered) revert UnknownDevice(deviceId);
    }

    function _checkRatedRange(int64 lo, int64 hi) private pure {
        if (lo > hi || lo < -MAX_ABS_RATED_W || hi > MAX_ABS_RATED_W) revert InvalidRatedRange(lo, hi);
    }

    /// Number of set bits of a 256-bit word (SWAR: pairs, nibbles, bytes, then a byte sum; the
    /// byte sum holds up to 255, so the all-ones word is answered first).
    function _popcount(uint256 x) private pure returns (uint256) {
        if (x == type(uint256).max) return 256;
        unchecked {
            x -= (x >> 1) & 0x5555555555555555555555555555555555555555555555555555555555555555;
            x = (x & 0x3333333333333333333333333333333333333333333333333333333333333333)
                + ((x >> 2) & 0x3333333333333333333333333333333333333333333333333333333333333333);
            x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f;
            return (x * 0x0101010101010101010101010101010101010101010101010101010101010101) >> 248;
        }
    }
}
