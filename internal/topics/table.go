package topics

// Entry is one row of the topic scheme, as documented in the README's
// topic table (a test keeps the two equal and checks every row against
// Allowed and RetainAllowed).
type Entry struct {
	// Pattern is the topic with {fleet}, {device}, {id} (a blob's
	// lowercase hex SHA-256) and {kind} placeholders.
	Pattern string
	// Publisher is who sends on it; the others read it (a device reads
	// only its own dev/{device}/in/ and the fleet's global/ topics, the
	// coordinator reads every device's out/).
	Publisher Role
	// Retained: published with the retain flag (and cleared with an empty
	// retained payload).
	Retained bool
	// Kinds lists the values of {kind}, if the pattern has it.
	Kinds []string
	// Reader, if set, is who reads it when that is not the other side
	// (the coordinator's probe to itself).
	Reader Role
}

// Scheme is every topic fedge uses.
func Scheme() []Entry {
	return []Entry{
		{Pattern: "fedge/v1/{fleet}/global/manifest", Publisher: RoleCoordinator, Retained: true},
		{Pattern: "fedge/v1/{fleet}/global/round", Publisher: RoleCoordinator, Retained: true},
		{Pattern: "fedge/v1/{fleet}/global/blob/{id}/desc", Publisher: RoleCoordinator, Retained: true},
		{Pattern: "fedge/v1/{fleet}/global/blob/{id}/chunk", Publisher: RoleCoordinator},
		{Pattern: "fedge/v1/{fleet}/dev/{device}/in/{kind}", Publisher: RoleCoordinator,
			Kinds: []string{KindTask, KindAck, KindEnroll, KindSecAgg, KindControl}},
		{Pattern: "fedge/v1/{fleet}/dev/{device}/in/blob/{id}/req", Publisher: RoleCoordinator},
		{Pattern: "fedge/v1/{fleet}/dev/{device}/out/{kind}", Publisher: RoleDevice,
			Kinds: []string{KindStatus, KindEnroll, KindUpdate, KindSecAgg}},
		{Pattern: "fedge/v1/{fleet}/dev/{device}/out/blob/{id}/desc", Publisher: RoleDevice, Retained: true},
		{Pattern: "fedge/v1/{fleet}/dev/{device}/out/blob/{id}/chunk", Publisher: RoleDevice},
		{Pattern: "fedge/v1/{fleet}/dev/{device}/out/blob/{id}/req", Publisher: RoleDevice},
		{Pattern: "fedge/v1/{fleet}/svc/probe", Publisher: RoleCoordinator, Reader: RoleCoordinator},
	}
}
