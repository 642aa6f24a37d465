const { MongooseDriver } = require('@colyseus/mongoose-driver');
const uri = process.argv[2];
(async () => {
  const d = new MongooseDriver(uri);
  await new Promise(r => setTimeout(r, +process.argv[3] || 0));
  const inst = d.createInstance({ roomId: 'room' + Date.now(), processId: 'p1', name: 'echo', clients: 0, maxClients: 10 });
  await inst.save();
  console.log('saved', inst.roomId);
  await new Promise(r => setTimeout(r, 500));
  await d.shutdown();
})();
